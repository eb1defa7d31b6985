"""Model families behind one interface: the trainer, the converter, the commands and the parity suite ask this
registry, never which family they hold.

A family brings, for a mae_core.ModelSpec of its own:
- build(spec, rngs, dtype, scan_layers, remat) / build_torch(spec): the Flax and the torch model (an MAE, or its encoder alone);
- table(model) / upgrade(arrays, model): its converter rows, and the rewrite of legacy checkpoints;
- detect(keys) / infer(arrays, given, name): whether a state dict is its own ('MAE' / 'ViT'), and the spec
  the tensor shapes give (what they do not fix comes from `given`, or is assumed and said so);
- decays(path): the weight-decay rule of its recipe; encoder_spec(spec): what describes its encoder's files.
Every model class carries `family` (its name), so a model finds its family without isinstance chains.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from mae_core.errors import UsageError
from mae_flax import fixed_tables, official, videomae, vit_pytorch


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    layouts: tuple  # the torch layouts its table knows; the first is its own
    build: Callable
    build_torch: Callable
    table: Callable
    upgrade: Callable
    detect: Callable
    is_mae: Callable
    infer: Callable
    decays: Callable
    encoder_spec: Callable  # the description written beside an encoder's file
    # the classifier (mae-finetune, mae-linprobe): its Flax and torch builders, pools, head, lr-decay layers
    build_classifier: Callable
    build_classifier_torch: Callable
    pools: tuple
    default_pool: Callable  # (spec, 'finetune' | 'linprobe') -> the pool the recipe uses
    head: str  # the torch key prefix of its head
    fresh: tuple  # torch key prefixes an encoder's checkpoint lacks (initialised fresh)
    layer_id: Callable  # (per-block parameter path, depth) -> its layer for layer-wise lr decay
    depth: Callable  # (classifier) -> its number of blocks
    hf: object  # its HuggingFace folders (HF_MODEL_TYPE, given_from_config, config_from_spec), or None


def _family(package):
    """A family from its package (mae_flax/<family>/), which names each piece the same way."""
    return Family(
        name=package.facts.NAME,
        layouts=package.facts.LAYOUTS,
        build=package.build,
        build_torch=package.build_torch,
        table=package.table.table,
        upgrade=package.table.upgrade,
        detect=package.facts.detect,
        is_mae=package.table.is_mae,
        infer=package.infer,
        decays=package.decays,
        encoder_spec=package.encoder_spec,
        build_classifier=package.build_classifier,
        build_classifier_torch=package.build_classifier_torch,
        pools=package.POOLS,
        default_pool=package.default_pool,
        head=package.HEAD,
        fresh=package.FRESH,
        layer_id=package.layer_id,
        depth=package.depth,
        hf=getattr(package, 'hf', None),
    )


FAMILIES = {family.name: family for family in map(_family, (vit_pytorch, official, videomae))}


def for_hf_config(config, source):
    """The family whose HuggingFace model_type a config.json names; a UsageError naming the ones known."""
    known = {family.hf.HF_MODEL_TYPE: family for family in FAMILIES.values() if family.hf is not None}
    model_type = config.get('model_type')
    if model_type not in known:
        raise UsageError(f'{source} is a {model_type!r} config, expected one of {", ".join(map(repr, known))}')
    return known[model_type]


def get(name):
    if name not in FAMILIES:
        raise UsageError(f'unknown model family {name!r}: expected one of {", ".join(FAMILIES)}')
    return FAMILIES[name]


def of(model):
    """The family of a mae_flax model (its class's `family`)."""
    name = getattr(type(model), 'family', None)
    if name not in FAMILIES:
        raise TypeError(
            f'expected a mae_flax model of a known family ({", ".join(FAMILIES)}), got {type(model).__name__}'
        )
    return FAMILIES[name]


def detect(keys, name):
    """(Family, 'MAE' or 'ViT') of a torch state dict's keys; a UsageError naming `name` if no family knows them."""
    keys = list(keys)
    for family in FAMILIES.values():
        detected = family.detect(keys)
        if detected is not None:
            return family, detected[0]
    first_keys = ', '.join(map(str, keys[:3]))
    raise UsageError(
        f'{name} is not a state dict of any known model family ({", ".join(FAMILIES)}): '
        f'its {len(keys)} tensors begin {first_keys}'
    )


def build(spec, *, rngs, dtype=None, scan_layers=False, remat='none'):
    """The mae_flax model a ModelSpec describes, freshly initialised; `scan_layers` and `remat` choose how its blocks
    run (mae_flax.stack), not what it computes."""
    return get(spec.family).build(spec, rngs=rngs, dtype=dtype, scan_layers=scan_layers, remat=remat)


def build_torch(spec):
    """The mae_torch twin a ModelSpec describes, freshly initialised (imports torch)."""
    return get(spec.family).build_torch(spec)


def build_abstract(spec, dtype=None):
    """The model with abstract weights, to be loaded: no random init, which compiles one XLA program per weight
    shape (seconds on a CPU). Only the rng streams get concrete keys (the masking noise of a call without
    `noise`) and the fixed tables their computed values."""
    try:
        model = nnx.eval_shape(lambda: build(spec, rngs=nnx.Rngs(0), dtype=dtype))
    except (ValueError, TypeError) as error:
        raise UsageError(f'cannot build the model: {error}') from error
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.RngKey):
            node.set_value(jax.random.key(0))
        elif isinstance(node, nnx.RngCount):
            node.set_value(jnp.zeros((), jnp.uint32))
    return fixed_tables.fill_computed(model)  # what the model computes; a file may hold its own

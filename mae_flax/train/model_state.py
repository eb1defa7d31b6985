"""The training state of a run's model: building it from the config, its parameters and other state (nnx.split),
the state's shardings, and copying replicated arrays to the host. Shared by pretraining, classification and the
commands that restore a workdir's model (no optimizer, no loop)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mae_core.spec import ModelSpec
from mae_flax import families, fixed_tables
from mae_flax.stack import Scanned
from mae_flax.train import sharding


def model_spec(config):
    """The run's model description (config.model) as a mae_core.ModelSpec."""
    return ModelSpec.from_dict(config.model.to_dict())


def build_model(config, rngs, tables=None):
    """The run's model; `tables`: its fixed tables that are not the computed ones ({path: array}, a workdir's
    fixed_tables.safetensors)."""
    model = families.build(
        model_spec(config),
        rngs=rngs,
        dtype=jnp.dtype(config.dtype),
        scan_layers=config.get('scan_layers', False),  # runs before this field existed had unscanned blocks
        remat=config.get('remat', 'none'),
    )
    return fixed_tables.set_tables(model, tables) if tables else model


def params_of(model):
    """The model's trainable parameters as a pure dict (fixed tables and rng streams are not parameters)."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def abstract_params(config):
    """ShapeDtypeStructs of the run's parameters, without initialising anything."""
    return params_of(nnx.eval_shape(lambda: build_model(config, nnx.Rngs(config.seed))))


def fsdp_min_size(config):
    """Parameters of fewer elements (per block) stay replicated under FSDP (runs before this field: 0)."""
    return config.mesh.get('fsdp_min_size', 0)


def model_parts(config, mesh=None, build=None, kinds=(nnx.Param,), tables=None):
    """(graphdef, rest): what nnx.merge needs besides the model's state of `kinds` (the parameters; a classifier's
    batch statistics too). `rest` is the model's other state (rng streams, fixed tables: constants of the compiled
    step), built by a jit whose parameter initialisation XLA drops; `build()` makes the model (default: the run's
    MAE, with `tables`). On a `mesh` with fsdp > 1 the scanned blocks gather their weights once per pass
    (sharding.FsdpGather)."""
    build = build or (lambda: build_model(config, nnx.Rngs(config.seed), tables))
    abstract_model = nnx.eval_shape(build)
    if mesh is not None and mesh.shape['fsdp'] > 1:
        set_fsdp_gather(abstract_model, config, mesh)
    graphdef = nnx.split(abstract_model, *kinds, ...)[0]
    rest = jax.jit(lambda: nnx.split(build(), *kinds, ...)[-1])()
    return graphdef, rest


def set_fsdp_gather(model, config, mesh):
    """The model's scanned blocks gather their FSDP-sharded weights once per block and pass (sharding.FsdpGather)."""
    gather = sharding.FsdpGather(mesh, fsdp_min_size(config), config.dtype)
    for _, module in model.iter_modules():
        if isinstance(module, Scanned):
            module.gather = gather


def with_shardings(abstract_state, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings)


def copy_to_host(tree):
    """Fully replicated global arrays -> numpy, on any process (one wait for the device for the whole tree)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)

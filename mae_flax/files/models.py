"""Model files: read any checkpoint a user holds into a mae_flax model and its ModelSpec; write it in either layout.

Reads (a mae-train workdir is read by mae_flax.train.workdir; mae_flax.model_files.read_model takes either),
recognising each by what it is:
- a torch-layout state dict (`.pt`/`.pth`/`.safetensors`) of any family, detected from its keys, bare or under
  `{'model': ...}` / `{'state_dict': ...}`, with DDP `module.` / torch.compile `_orig_mod.` prefixes;
- a Flax checkpoint: one `.safetensors` file keyed by mae_flax parameter paths
  (`encoder.transformer.layers.0.0.to_qkv.kernel`, Flax layout), with `format: mae_flax` in its metadata;
- a HuggingFace ViTMAE folder (`config.json` + `model.safetensors` or `pytorch_model.bin`), which says every
  hyperparameter, and writes one that `ViTMAEForPreTraining.from_pretrained` loads.

Every file written gets its ModelSpec beside it, `NAME.json` for `NAME` (suffix included: `mae.pt.json`). When
reading, the spec comes from that JSON (or the workdir's config.json), then the flags, then the tensor shapes.

Why a Flax checkpoint is one safetensors file and not an orbax directory: it is one thing to copy and publish,
read without torch, orbax or pickle (a downloaded file cannot run code), lazily, and by anything with
`safetensors.numpy.load_file`. Training checkpoints stay orbax (mae_flax.train.state_checkpoints).
"""

import dataclasses
import json
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from mae_core.errors import UsageError
from mae_core.spec import FAMILIES as FAMILY_FACTS
from mae_core.spec import ModelSpec
from mae_flax import families, fixed_tables, stack
from mae_flax.convert import load_torch_state_dict, to_torch_state_dict
from mae_flax.files import hf_folders
from mae_flax.files.paths import atomic_path
from mae_flax.files.weights import (
    FLAX_FORMAT,
    SUFFIXES,
    is_flax_file,
    one_line,
    read_weights,
    save_state_dict_file,
    unwrap_state_dict,
)


@dataclasses.dataclass
class LoadedModel:
    path: Path
    layout: str  # 'torch', 'flax' or 'workdir': what was read
    spec: ModelSpec
    sources: dict  # {field: 'inferred' | 'given' | 'assumed' | 'from NAME.json', ...}
    model: nnx.Module  # the mae_flax model with the checkpoint's weights
    file_arrays: dict | None = None  # {torch key: array}: a torch file's own (None: converted when asked)
    step: int | None = None  # the training step, for a workdir
    encoder_only: bool = False  # the file held an MAE's encoder alone: its decoder is not loaded (abstract)

    @property
    def torch_arrays(self):
        """{torch key: array} in the family's own layout: the file's own for a torch file, else converted from the
        model's arrays, once, when first asked (a Flax file is never detoured through torch to be read)."""
        if self.file_arrays is None:
            self.file_arrays = to_torch_state_dict(self.model, encoder_only=self.encoder_only)
        return self.file_arrays

    def needs_decoder(self, what):
        """A UsageError for a command that runs the decoder (`what`) on a file that holds an encoder alone."""
        if self.encoder_only:
            raise UsageError(
                f'{self.path} holds an encoder alone (no decoder): {what} needs an MAE with its decoder; '
                'mae-convert and mae-finetune/mae-linprobe --init_from take it'
            )

    @property
    def num_parameters(self):
        return sum(param.size for param in flax_params(self.model, self.encoder_only).values())


def spec_path(path):
    """Where the ModelSpec of a model file lies: NAME.json beside NAME."""
    path = Path(path)
    return path.with_name(path.name + '.json')


def flax_params(model, encoder_only=False):
    """{'encoder.transformer.layers.0.0.to_qkv.kernel': nnx.Param, ...}: the Flax checkpoint's keys, per block
    whether the model's blocks are scanned or not (a scanned block's parameters are stack.Slices); with
    `encoder_only`, an MAE's encoder's (its family's encoder rows)."""
    params = stack.per_layer(model)
    if not encoder_only:
        return params
    family = families.of(model)
    encoder = {id(_variable(row.param)) for row in family.table(model, family.layouts[0], True) if row.param}
    return {key: param for key, param in params.items() if id(_variable(param)) in encoder}


def _variable(param):
    return getattr(param, 'stacked', param)  # a scanned block's Slice: its stacked parameter


def _read_file(path):
    """(layout, contents) of a checkpoint file given by name; one clear UsageError for anything that is not one."""
    if path.suffix not in SUFFIXES:
        raise UsageError(f'expected a .pt, .pth or .safetensors checkpoint or a mae-train workdir, got {path}')
    contents = read_weights(path)
    return ('flax' if path.suffix == '.safetensors' and is_flax_file(path) else 'torch'), contents


def _given_by(spec, source):
    """{field: (value, source)} for every field of a spec, as the family's `infer` takes them."""
    given = {field: (value, source) for part in (spec.encoder, spec.mae or {}) for field, value in part.items()}
    return given | {'pixel_mean': (spec.pixel_mean, source), 'pixel_std': (spec.pixel_std, source)}


def _holds_encoder_alone(model, arrays):
    """Whether a Flax file's arrays are an MAE's encoder alone (written from an encoder's file)."""
    family = families.of(model)
    if not family.is_mae(model):
        return False
    encoder = flax_params(model, encoder_only=True)
    return all(key in arrays for key in encoder) and not any(
        key in arrays for key in flax_params(model).keys() - encoder.keys()
    )


def _load_flax_arrays(model, arrays, name, encoder_only=False):
    """Every parameter of the model (of its encoder) from a Flax file's arrays, and the fixed tables it holds (a file
    holds only those that are not the computed ones)."""
    params, tables = flax_params(model, encoder_only), fixed_tables.tables_of(model)
    problems = [f'missing {key!r}' for key in params if key not in arrays]
    problems += [f'unexpected {key!r}' for key in arrays if key not in params and key not in tables]
    problems += [
        f'{key!r} has shape {arrays[key].shape}, expected {param.shape}'
        for key, param in (params | tables).items()
        if key in arrays and arrays[key].shape != param.shape
    ]
    if problems:
        raise UsageError(
            f'{name} does not fit its model description ({len(problems)} problems): {"; ".join(problems[:5])}'
        )
    stack.set_values((param, jnp.asarray(arrays[key], dtype=param.dtype)) for key, param in params.items())
    return fixed_tables.set_tables(model, {key: arrays[key] for key in tables if key in arrays})


def _check_flags_apply(flags, family_name, path):
    facts = FAMILY_FACTS[family_name]
    fields = {*facts.ENCODER_FIELDS, *facts.MAE_FIELDS, 'pixel_mean', 'pixel_std'}
    foreign = [flag for flag in flags if flag not in fields]
    if foreign:
        raise UsageError(
            f'{path} is a {family_name}-family model: --{foreign[0]} does not apply to it (its fields: {", ".join(sorted(fields))})'
        )


def _read_hf_folder(folder, flags):
    config = hf_folders.hf_config(folder)
    family = families.for_hf_config(config, folder / 'config.json')
    try:
        given = family.hf.given_from_config(config, hf_folders.processor_config(folder), 'config.json')
    except KeyError as error:
        raise UsageError(
            f'{folder / "config.json"} has no {error} field: not a {config["model_type"]} config as transformers '
            'writes it'
        ) from error
    given |= {field: (value, 'given') for field, value in flags.items()}
    _check_flags_apply(flags, family.name, folder)
    arrays = hf_folders.state_dict(folder)
    family, kind = families.detect(arrays, folder)
    spec, sources = family.infer(arrays, given, folder)
    return _loaded(folder, 'hf', spec, sources, arrays, kind)


def _refuse_classifier(path):
    """A classifier mae-finetune or mae-linprobe exported is torch-ready already; say so rather than fail to read
    its description as a model's."""
    try:
        described = json.loads(spec_path(path).read_text())
    except (OSError, ValueError):
        return
    if isinstance(described, dict) and 'classifier' in described:
        raise UsageError(
            f'{path} is a classifier exported by mae-{"linprobe" if described.get("mode") == "linprobe" else "finetune"} '
            "in torch layout (timm's VisionTransformer or vit-pytorch's ViT keys): load it with "
            'safetensors.torch.load_file, or mae_flax.train.classify.torch_classifier for the mae_torch model'
        )


def read_model_file(path, flags=None):
    """A LoadedModel from a torch-layout or Flax file or a HuggingFace folder; `flags` is {field: value} from the
    command line, for what neither a JSON beside the file nor the tensor shapes say."""
    path, flags = Path(path), flags or {}
    if path.is_dir():
        if hf_folders.hf_config(path) is None:
            raise UsageError(f'{path} is a folder without a HuggingFace config.json: expected a checkpoint')
        return _read_hf_folder(path, flags)
    if not path.is_file():
        raise UsageError(f'no such checkpoint file or workdir: {path}')
    layout, contents = _read_file(path)
    _refuse_classifier(path)
    stored = ModelSpec.read(spec_path(path)) if spec_path(path).is_file() else None
    if layout == 'flax':
        return _read_flax_file(path, contents, stored, flags)
    given = {} if stored is None else _given_by(stored, f'from {spec_path(path).name}')
    given |= {field: (value, 'given') for field, value in flags.items()}
    try:
        arrays = unwrap_state_dict(contents, path)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from error
    family, kind = families.detect(arrays, path)
    _check_flags_apply(flags, family.name, path)
    spec, sources = family.infer(arrays, given, path)
    return _loaded(path, layout, spec, sources, arrays, kind)


def _loaded(path, layout, spec, sources, arrays, kind):
    """The LoadedModel of a torch state dict of `kind` ('MAE' or 'ViT'): an encoder alone in an MAE's model loads
    its encoder and leaves the decoder unloaded (encoder_only)."""
    model = families.build_abstract(spec)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', 'loaded the encoder alone')  # said by encoder_only, where it matters
            load_torch_state_dict(model, arrays)
    except ValueError as error:
        raise UsageError(f'{path}: {one_line(error)}') from error
    encoder_only = kind == 'ViT' and families.of(model).is_mae(model)
    return LoadedModel(path, layout, spec, sources, model, arrays, encoder_only=encoder_only)


def _read_flax_file(path, arrays, stored, flags):
    """A Flax file is this package's own: its description says the model, flags may change a field of it; the
    arrays load as they are, with no detour through torch layouts and no inference."""
    if stored is None:
        raise UsageError(f'{path} is a Flax checkpoint without its model description {spec_path(path)}')
    _check_flags_apply(flags, stored.family, path)
    facts = FAMILY_FACTS[stored.family]
    spec = stored
    for field, value in flags.items():
        if field in ('pixel_mean', 'pixel_std'):
            spec = spec.replace(**{field: value})
        else:
            spec = spec.with_fields('encoder' if field in facts.ENCODER_FIELDS else 'mae', **{field: value})
    sources = {field: f'from {spec_path(path).name}' for field in _given_by(spec, '')}
    sources |= {field: 'given' for field in flags}
    model = families.build_abstract(spec)
    encoder_only = _holds_encoder_alone(model, arrays)
    _load_flax_arrays(model, arrays, path, encoder_only)
    return LoadedModel(path, 'flax', spec, sources, model, encoder_only=encoder_only)


def write_model(loaded, path, layout, *, encoder_only=False):
    """Writes the model as a Flax file, a torch-layout file (its family's own layout) or a HuggingFace folder
    ('hf': config.json, model.safetensors, preprocessor_config.json), with its ModelSpec in NAME.json beside a file;
    nothing appears unless everything does. `encoder_only` leaves the decoder out (a model read from an encoder's
    file has none to write). Returns the paths written."""
    path, spec = Path(path), loaded.spec
    family = families.get(spec.family)
    if encoder_only and layout == 'flax':
        raise UsageError(
            '--encoder_only writes torch-layout files: use a .pt, .pth or .safetensors OUT with --to torch'
        )
    if encoder_only and (loaded.encoder_only or not family.is_mae(loaded.model)):
        raise UsageError(f'{loaded.path} holds an encoder alone already: drop --encoder_only')
    encoder_only = encoder_only or loaded.encoder_only
    if layout == 'hf':
        return _write_hf_folder(loaded, path, encoder_only)
    if encoder_only:
        spec = family.encoder_spec(spec)
    with atomic_path(spec_path(path)) as spec_tmp:
        spec_tmp.write_text(spec.to_json())
        if layout == 'flax':
            params = flax_params(loaded.model, encoder_only)
            arrays = {key: np.asarray(param[...]) for key, param in params.items()}
            arrays |= fixed_tables.own_tables(loaded.model)  # the computed ones are not stored
            if encoder_only:  # an encoder's file holds its own tables only
                arrays = {key: value for key, value in arrays.items() if not key.startswith('decoder')}
            with atomic_path(path) as tmp:
                safetensors.numpy.save_file(arrays, tmp, metadata={'format': FLAX_FORMAT})
        else:
            save_state_dict_file(to_torch_state_dict(loaded.model, encoder_only=encoder_only), path)
    return path, spec_path(path)


def _write_hf_folder(loaded, folder, encoder_only):
    family = families.get(loaded.spec.family)
    if family.hf is None:
        held = ', '.join(name for name, other in families.FAMILIES.items() if other.hf is not None)
        raise UsageError(f'a HuggingFace folder holds a model of the {held} families; {loaded.path} is {family.name}')
    config, processor = family.hf.config_from_spec(loaded.spec, encoder_only=encoder_only)
    arrays = to_torch_state_dict(loaded.model, layout='hf_model' if encoder_only else 'hf')
    return (hf_folders.write_folder(folder, config, processor, arrays),)


def torch_model(loaded):
    """The mae_torch twin of the loaded model, with its torch-layout weights loaded strictly, in eval mode."""
    loaded.needs_decoder('the torch twin')
    try:
        import torch
    except ImportError as error:
        raise UsageError(f'the torch side needs torch: pip install "twin-mae[torch]" ({error})') from error
    model = families.build_torch(loaded.spec)
    family, arrays = families.get(loaded.spec.family), loaded.torch_arrays
    detected = family.detect(arrays)
    if detected is not None and detected[1] != family.layouts[0]:  # HuggingFace's names: the twin has upstream's
        arrays = to_torch_state_dict(loaded.model)  # through the converter, bit-exact both ways (tested)
    state_dict = {
        key: value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))
        for key, value in arrays.items()
    }
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise UsageError(f'{loaded.path} does not load into mae_torch: {one_line(error)}') from error
    return model.eval()

"""Model files: read any checkpoint a user holds into a mae_flax model and its ModelSpec; write it in either layout.

Reads, recognising each by what it is:
- a torch-layout state dict (`.pt`/`.pth`/`.safetensors`) of any family, detected from its keys, bare or under
  `{'model': ...}` / `{'state_dict': ...}`, with DDP `module.` / torch.compile `_orig_mod.` prefixes;
- a Flax checkpoint: one `.safetensors` file keyed by mae_flax parameter paths
  (`encoder.transformer.layers.0.0.to_qkv.kernel`, Flax layout), with `format: mae_flax` in its metadata;
- a `mae-train` workdir: its latest checkpoint, or a given step;
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
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
from flax import nnx

from mae_core.errors import UsageError
from mae_core.spec import FAMILIES as FAMILY_FACTS
from mae_core.spec import ModelSpec
from mae_flax import families, stack
from mae_flax.convert import (
    load_state_dict_file,
    load_torch_state_dict,
    save_state_dict_file,
    to_torch_state_dict,
    unwrap_state_dict,
)
from mae_flax.files import atomic_path, is_remote
from mae_flax.official import hf

FLAX_FORMAT = 'mae_flax'
SUFFIXES = ('.pt', '.pth', '.safetensors')


@dataclasses.dataclass
class LoadedModel:
    path: Path
    layout: str  # 'torch', 'flax' or 'workdir': what was read
    spec: ModelSpec
    sources: dict  # {field: 'inferred' | 'given' | 'assumed' | 'from NAME.json', ...}
    model: nnx.Module  # the mae_flax model with the checkpoint's weights
    torch_arrays: dict  # {torch key: array}: the file's own for a torch file, converted otherwise
    step: int | None = None  # the training step, for a workdir

    @property
    def num_parameters(self):
        return sum(param.size for param in flax_params(self.model).values())


def spec_path(path):
    """Where the ModelSpec of a model file lies: NAME.json beside NAME."""
    path = Path(path)
    return path.with_name(path.name + '.json')


def one_line(error):
    return '; '.join(line.strip() for line in str(error).splitlines() if line.strip())


def flax_params(model):
    """{'encoder.transformer.layers.0.0.to_qkv.kernel': nnx.Param, ...}: the Flax checkpoint's keys, per block
    whether the model's blocks are scanned or not (a scanned block's parameters are stack.Slices)."""
    return stack.per_layer(model)


def _read_file(path):
    """(layout, contents) of a checkpoint file; one clear UsageError for anything that is not one."""
    if path.suffix not in SUFFIXES:
        raise UsageError(f'expected a .pt, .pth or .safetensors checkpoint or a mae-train workdir, got {path}')
    if path.stat().st_size == 0:
        raise UsageError(f'{path} is an empty file (0 bytes): not a checkpoint')
    try:
        if path.suffix == '.safetensors':
            with safetensors.safe_open(path, framework='np') as file:
                flax_keys = (file.metadata() or {}).get('format') == FLAX_FORMAT
                flax_keys = flax_keys or any(key.endswith('.kernel') for key in file.keys())
            return 'flax' if flax_keys else 'torch', safetensors.numpy.load_file(path)
        return 'torch', load_state_dict_file(path)
    except pickle.UnpicklingError as error:
        with open(path, 'rb') as file:
            pickled = file.read(2) in (b'PK', *(bytes([0x80, protocol]) for protocol in range(2, 6)))  # zip or pickle
        if 'Weights only load failed' not in str(error) or not pickled:
            raise UsageError(f'{path} is not a readable {path.suffix} checkpoint (not a torch.save file)') from error
        hint = ' (a whole nn.Module?): save model.state_dict() instead' if 'torch.nn' in str(error) else ''
        raise UsageError(
            f'{path} holds Python objects other than tensors, which were refused for safety (loading them could '
            f'run any code){hint}'
        ) from error
    except Exception as error:  # torch and safetensors raise many types for a file that is not theirs
        reason = f'{type(error).__name__}: {one_line(error)}'
        raise UsageError(f'{path} is not a readable {path.suffix} checkpoint ({reason})') from error


def _given_by(spec, source):
    """{field: (value, source)} for every field of a spec, as the family's `infer` takes them."""
    given = {field: (value, source) for part in (spec.encoder, spec.mae or {}) for field, value in part.items()}
    return given | {'pixel_mean': (spec.pixel_mean, source), 'pixel_std': (spec.pixel_std, source)}


def _load_flax_arrays(model, arrays, name):
    params = flax_params(model)
    problems = [f'missing {key!r}' for key in params if key not in arrays]
    problems += [f'unexpected {key!r}' for key in arrays if key not in params]
    problems += [
        f'{key!r} has shape {arrays[key].shape}, expected {param.shape}'
        for key, param in params.items()
        if key in arrays and arrays[key].shape != param.shape
    ]
    if problems:
        raise UsageError(
            f'{name} does not fit its model description ({len(problems)} problems): {"; ".join(problems[:5])}'
        )
    stack.assign((param, jnp.asarray(arrays[key], dtype=param.dtype)) for key, param in params.items())
    return model


def _read_workdir(path, step):
    try:
        from mae_flax.train import trainer
    except ImportError as error:
        raise UsageError(
            f'reading a mae-train workdir needs the training extra: pip install "twin-mae[train]" ({error})'
        ) from error
    model, step, config = trainer.restore_model(path, step)
    spec = ModelSpec.from_dict(config.model.to_dict())
    sources = {field: 'from config.json' for field in _given_by(spec, '')}
    return LoadedModel(path, 'workdir', spec, sources, model, to_torch_state_dict(model), step)


def _check_flags_apply(flags, family_name, path):
    facts = FAMILY_FACTS[family_name]
    fields = {*facts.ENCODER_FIELDS, *facts.MAE_FIELDS, 'pixel_mean', 'pixel_std'}
    foreign = [flag for flag in flags if flag not in fields]
    if foreign:
        raise UsageError(
            f'{path} is a {family_name}-family model: --{foreign[0]} does not apply to it (its fields: {", ".join(sorted(fields))})'
        )


def _hf_config(folder):
    """The folder's HuggingFace config, if it is one (a `model_type`), else None."""
    try:
        config = json.loads((folder / 'config.json').read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and 'model_type' in config else None


def _read_hf_folder(folder, flags):
    config = _hf_config(folder)
    processor_path = folder / 'preprocessor_config.json'
    try:
        processor = json.loads(processor_path.read_text()) if processor_path.is_file() else None
        given = hf.given_from_config(config, processor, 'config.json')
    except json.JSONDecodeError as error:
        raise UsageError(f'{processor_path} is not valid JSON ({error})') from error
    except KeyError as error:
        raise UsageError(f'{folder / "config.json"} has no {error} field: not a ViTMAE config') from error
    given |= {field: (value, 'given') for field, value in flags.items()}
    _check_flags_apply(flags, 'official', folder)
    arrays = hf_folder_state_dict(folder)
    family, _ = families.detect(arrays, folder)
    spec, sources = family.infer(arrays, given, folder)
    model = families.build_abstract(spec)
    try:
        load_torch_state_dict(model, arrays)
    except ValueError as error:
        raise UsageError(f'{folder}: {one_line(error)}') from error
    return LoadedModel(folder, 'hf', spec, sources, model, arrays)


def hf_folder_state_dict(folder):
    """The torch state dict of a HuggingFace folder (model.safetensors, or pytorch_model.bin through torch)."""
    folder = Path(folder)
    weights = [folder / name for name in ('model.safetensors', 'pytorch_model.bin') if (folder / name).is_file()]
    if not weights:
        raise UsageError(f'{folder} has no model.safetensors or pytorch_model.bin')
    contents = safetensors.numpy.load_file(weights[0]) if weights[0].suffix == '.safetensors' else _load_bin(weights[0])
    return unwrap_state_dict(contents, weights[0])


def _load_bin(path):
    try:
        import torch
    except ImportError as error:
        raise UsageError(f'reading {path} needs torch: pip install "twin-mae[torch]"') from error
    return torch.load(path, map_location='cpu', weights_only=True)


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


def read_model(path, flags=None, *, step=None):
    """A LoadedModel from a torch-layout or Flax file or a mae-train workdir; `flags` is {field: value} from the
    command line, for what neither a JSON beside the file nor the tensor shapes say."""
    if is_remote(path):  # a mae-train workdir in a bucket
        if flags:
            raise UsageError(
                f'{path} is a mae-train workdir, whose config.json says everything: drop --{next(iter(flags))}'
            )
        return _read_workdir(path, step)
    path, flags = Path(path), flags or {}
    if path.is_dir() and _hf_config(path) is not None:
        return _read_hf_folder(path, flags)
    if path.is_dir():
        if not (path / 'config.json').is_file():
            raise UsageError(
                f'{path} is a folder without config.json: expected a checkpoint file or a mae-train workdir'
            )
        if flags:
            raise UsageError(
                f'{path} is a mae-train workdir, whose config.json says everything: drop --{next(iter(flags))}'
            )
        return _read_workdir(path, step)
    if step is not None:
        raise UsageError(f'--step applies to mae-train workdirs; {path} is a file')
    if not path.is_file():
        raise UsageError(f'no such checkpoint file or workdir: {path}')
    layout, contents = _read_file(path)
    _refuse_classifier(path)
    stored = ModelSpec.read(spec_path(path)) if spec_path(path).is_file() else None
    given = {} if stored is None else _given_by(stored, f'from {spec_path(path).name}')
    given |= {field: (value, 'given') for field, value in flags.items()}

    model = None
    if layout == 'flax':
        if stored is None:
            raise UsageError(f'{path} is a Flax checkpoint without its model description {spec_path(path)}')
        model = _load_flax_arrays(families.build_abstract(stored), contents, path)
        arrays = to_torch_state_dict(model)
    else:
        try:
            arrays = unwrap_state_dict(contents, path)
        except (TypeError, ValueError) as error:
            raise UsageError(str(error)) from error
    family, _ = families.detect(arrays, path)
    _check_flags_apply(flags, family.name, path)
    spec, sources = family.infer(arrays, given, path)
    if model is None or spec != stored:
        model = families.build_abstract(spec)
        try:
            load_torch_state_dict(model, arrays)
        except ValueError as error:
            raise UsageError(f'{path}: {one_line(error)}') from error
    return LoadedModel(path, layout, spec, sources, model, arrays)


def write_model(loaded, path, layout, *, encoder_only=False):
    """Writes the model as a Flax file, a torch-layout file (its family's own layout) or a HuggingFace folder
    ('hf': config.json, model.safetensors, preprocessor_config.json), with its ModelSpec in NAME.json beside a file;
    nothing appears unless everything does. `encoder_only` (torch layout) leaves the decoder out. Returns the paths
    written."""
    path, spec = Path(path), loaded.spec
    family = families.get(spec.family)
    if encoder_only and layout != 'torch':
        raise UsageError(
            '--encoder_only writes torch-layout files: use a .pt, .pth or .safetensors OUT with --to torch'
        )
    if encoder_only and not family.is_mae(loaded.model):
        raise UsageError(f'{loaded.path} holds an encoder alone already: drop --encoder_only')
    if layout == 'hf':
        return _write_hf_folder(loaded, path)
    if encoder_only:
        spec = family.encoder_spec(spec)
    with atomic_path(spec_path(path)) as spec_tmp:
        spec_tmp.write_text(spec.to_json())
        if layout == 'flax':
            arrays = {key: np.asarray(param[...]) for key, param in flax_params(loaded.model).items()}
            with atomic_path(path) as tmp:
                safetensors.numpy.save_file(arrays, tmp, metadata={'format': FLAX_FORMAT})
        else:
            save_state_dict_file(to_torch_state_dict(loaded.model, encoder_only=encoder_only), path)
    return path, spec_path(path)


def _write_hf_folder(loaded, folder):
    if loaded.spec.family != 'official':
        raise UsageError(
            f'a HuggingFace ViTMAE folder holds an official-family MAE; {loaded.path} is {loaded.spec.family}'
        )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f'{folder} exists: a HuggingFace export is a new folder')
    config, processor = hf.config_from_spec(loaded.spec)
    arrays = to_torch_state_dict(loaded.model, layout='hf')
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{folder.name}.', dir=folder.parent))
    try:
        (tmp / 'config.json').write_text(json.dumps(config, indent=2) + '\n')
        (tmp / 'preprocessor_config.json').write_text(json.dumps(processor, indent=2) + '\n')
        safetensors.numpy.save_file(arrays, tmp / 'model.safetensors', metadata={'format': 'pt'})
        if folder.exists():
            folder.rmdir()  # empty, checked above
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return (folder,)


def torch_model(loaded):
    """The mae_torch twin of the loaded model, with its torch-layout weights loaded strictly, in eval mode."""
    try:
        import torch
    except ImportError as error:
        raise UsageError(f'the torch side needs torch: pip install "twin-mae[torch]" ({error})') from error
    model = families.build_torch(loaded.spec)
    state_dict = {
        key: value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))
        for key, value in loaded.torch_arrays.items()
    }
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise UsageError(f'{loaded.path} does not load into mae_torch: {one_line(error)}') from error
    return model.eval()

"""Checkpoint files for the commands: read either layout into a mae_flax model, write either layout back.

The Flax checkpoint is one `.safetensors` file whose keys are mae_flax's parameter paths
(`encoder.transformer.layers.0.0.to_qkv.kernel`, arrays in Flax layout), with `format: mae_flax` in its
metadata (a file without it is still recognised by its `.kernel` keys, which torch names `.weight`). Not an orbax directory, because a single safetensors file is one thing to copy and publish; it is
read without torch, orbax or pickle (so a downloaded file cannot run code), lazily (safetensors maps each tensor
on demand), and with `safetensors.numpy.load_file` by anything else, the trainer included.

Every checkpoint written gets its model config beside it, `NAME.json` for `NAME` (suffix included, e.g.
`mae.safetensors.json`): `{"model": "MAE" or "ViT", "vit": ViT keywords, "mae": MAE keywords}`. When reading,
that JSON is used if present, then the flags, then what the tensor shapes say (mae_flax.cli.infer).
"""

import dataclasses
import json
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
from flax import nnx

import mae_flax
from mae_flax.cli.common import UsageError
from mae_flax.cli.infer import compact, infer_config
from mae_flax.convert import (
    load_state_dict_file,
    load_torch_state_dict,
    save_state_dict_file,
    to_torch_state_dict,
    unwrap_state_dict,
)
from mae_flax.files import atomic_path

FLAX_FORMAT = 'mae_flax'
TORCH_SUFFIXES = ('.pt', '.pth', '.safetensors')


@dataclasses.dataclass
class Checkpoint:
    path: Path
    layout: str  # 'torch' or 'flax': the file's layout
    config: dict  # {'model': 'MAE' or 'ViT', 'vit': {...}, 'mae': {...}}
    sources: dict  # {field: 'inferred' | 'given' | 'assumed' | 'from NAME.json', ...}
    model: nnx.Module  # mae_flax.MAE or mae_flax.ViT with the checkpoint's weights
    torch_arrays: dict  # {torch key: array}: the file's own for a torch file, converted for a Flax one

    @property
    def num_parameters(self):
        return sum(param.size for param in flax_params(self.model).values())


def config_path(path):
    path = Path(path)
    return path.with_name(path.name + '.json')


def one_line(error):
    return '; '.join(line.strip() for line in str(error).splitlines() if line.strip())


def flax_params(model):
    """{'encoder.transformer.layers.0.0.to_qkv.kernel': nnx.Param, ...}: the Flax checkpoint's keys."""
    return {'.'.join(map(str, path)): node for path, node in nnx.iter_graph(model) if isinstance(node, nnx.Param)}


def _read_file(path):
    """(layout, contents) of a checkpoint file; one clear UsageError for anything that is not one."""
    if not path.is_file():
        raise UsageError(f'no such checkpoint file: {path}')
    if path.suffix not in TORCH_SUFFIXES:
        raise UsageError(f'expected a .pt, .pth or .safetensors checkpoint, got {path}')
    try:
        if path.suffix == '.safetensors':
            with safetensors.safe_open(path, framework='np') as file:
                flax_keys = (file.metadata() or {}).get('format') == FLAX_FORMAT
                flax_keys = flax_keys or any(key.endswith('.kernel') for key in file.keys())
            return 'flax' if flax_keys else 'torch', safetensors.numpy.load_file(path)
        return 'torch', load_state_dict_file(path)
    except pickle.UnpicklingError as error:
        if 'Unsupported global' not in str(error):
            raise UsageError(f'{path} is not a readable {path.suffix} checkpoint (not a torch.save file)') from error
        raise UsageError(
            f'{path} holds pickled Python objects, not only tensors (a whole nn.Module?), which torch.load '
            '(weights_only=True) refuses to run: save model.state_dict() instead'
        ) from error
    except Exception as error:  # torch and safetensors raise many types for a file that is not theirs
        reason = f'{type(error).__name__}: {one_line(error)}'
        raise UsageError(f'{path} is not a readable {path.suffix} checkpoint ({reason})') from error


def _read_config(path):
    """The config JSON beside `path`, sizes as the constructors take them; None if there is none."""
    json_path = config_path(path)
    if not json_path.is_file():
        return None
    try:
        config = json.loads(json_path.read_text())
        model, vit = config['model'], dict(config['vit'])
        mae = dict(config['mae']) if model == 'MAE' else None
        vit['image_size'], vit['patch_size'] = compact(vit['image_size']), compact(vit['patch_size'])
    except (ValueError, KeyError, TypeError) as error:
        raise UsageError(f'{json_path} is not a config written by mae-convert: {one_line(error)}') from error
    return {'model': model, 'vit': vit} | ({'mae': mae} if mae is not None else {})


def _construct_flax(config):
    vit = mae_flax.ViT(**config['vit'], rngs=nnx.Rngs(0))
    if config['model'] == 'ViT':
        return vit
    return mae_flax.MAE(encoder=vit, **config['mae'], rngs=nnx.Rngs(1))


def build_flax(config):
    """A mae_flax MAE or ViT from a config, its weights abstract until loaded.

    Every weight is about to be overwritten, and a random init compiles one XLA program per weight shape
    (seconds on a CPU); only the masking noise stream gets a concrete (unused: noise is always passed) key.
    """
    try:
        model = nnx.eval_shape(lambda: _construct_flax(config))
    except (ValueError, TypeError) as error:
        raise UsageError(f'cannot build the model: {one_line(error)}') from error
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.RngKey):
            node.set_value(jax.random.key(0))
        elif isinstance(node, nnx.RngCount):
            node.set_value(jnp.zeros((), jnp.uint32))
    return model


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
        raise UsageError(f'{name} does not fit its config ({len(problems)} problems): {"; ".join(problems[:5])}')
    for key, param in params.items():
        param.set_value(jnp.asarray(arrays[key], dtype=param.dtype))
    return model


def load_checkpoint(path, flags):
    """A Checkpoint from a torch-layout or Flax file; `flags` is {field: value} from the command line."""
    path = Path(path)
    layout, contents = _read_file(path)
    stored = _read_config(path)
    given = {}
    if stored is not None:
        source = f'from {config_path(path).name}'
        given = {field: (value, source) for part in ('vit', 'mae') for field, value in stored.get(part, {}).items()}
    given |= {field: (value, 'given') for field, value in flags.items()}

    model = None
    if layout == 'flax':
        if stored is None:
            raise UsageError(f'{path} is a Flax checkpoint without its config {config_path(path)}')
        model = _load_flax_arrays(build_flax(stored), contents, path)
        arrays = to_torch_state_dict(model)
    else:
        try:
            arrays = unwrap_state_dict(contents, path)
        except (TypeError, ValueError) as error:
            raise UsageError(str(error)) from error

    config, sources = infer_config(arrays, given, path)
    if model is None or config != stored:
        model = build_flax(config)
        try:
            load_torch_state_dict(model, arrays)
        except ValueError as error:
            raise UsageError(f'{path}: {one_line(error)}') from error
    return Checkpoint(path, layout, config, sources, model, arrays)


def write_checkpoint(checkpoint, path, layout):
    """Writes the model as a Flax or torch-layout file with its config JSON; neither appears unless both do."""
    path = Path(path)
    with atomic_path(config_path(path)) as config_tmp:
        config_tmp.write_text(json.dumps(checkpoint.config, indent=2) + '\n')
        if layout == 'flax':
            arrays = {key: np.asarray(param[...]) for key, param in flax_params(checkpoint.model).items()}
            with atomic_path(path) as tmp:
                safetensors.numpy.save_file(arrays, tmp, metadata={'format': FLAX_FORMAT})
        else:
            save_state_dict_file(to_torch_state_dict(checkpoint.model), path)
    return path, config_path(path)


def torch_model(checkpoint):
    """The mae_torch twin of the checkpoint's model, loaded from its torch-layout weights (strictly)."""
    try:
        import torch

        import mae_torch
    except ImportError as error:
        raise UsageError(f'the torch side needs torch: pip install "twin-mae[torch]" ({error})') from error
    config = checkpoint.config
    model = mae_torch.ViT(**config['vit'])
    if config['model'] == 'MAE':
        model = mae_torch.MAE(encoder=model, **config['mae'])
    state_dict = {
        key: value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))
        for key, value in checkpoint.torch_arrays.items()
    }
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise UsageError(f'{checkpoint.path} does not load into mae_torch: {one_line(error)}') from error
    return model.eval()

"""Weights between torch state dicts and mae_flax models, both ways, bit-exact: the engine.

Each family brings one table (mae_flax/<family>/table.py) of rows: a torch key, the Flax parameter that holds
it, and the two functions that move the array between layouts (a Linear weight is transposed, a token reshaped,
anything else copied); a scanned model's blocks are read and written per block (mae_flax.stack). The engine
checks every key and shape against the table, reports every problem at once, and loads nothing unless everything
fits. Keys that name the same parameter twice (vit-pytorch's shared patch
embedding) must hold the same values, and are all written back. torch is only imported to read or write
`.pt`/`.pth` files.
"""

import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from mae_flax import families, stack
from mae_flax.files import atomic_path

WRAPPER_KEYS = ('state_dict', 'model_state_dict', 'model', 'module')  # where training scripts nest the weights
STRIPPED_PREFIXES = ('module.', '_orig_mod.')  # DDP / DataParallel, and torch.compile


def torch_table(model, layout=None, encoder_only=False):
    """[Row] of the model's family, in torch's state_dict order: for `layout` (default: the family's own) and for the
    whole model or, with `encoder_only`, the keys of its encoder alone."""
    family = families.of(model)
    return family.table(model, layout or family.layouts[0], encoder_only)


def _to_numpy(value):
    """A torch tensor (without importing torch) or any array -> numpy."""
    if hasattr(value, 'detach'):
        value = value.detach().cpu()
        if str(value.dtype) == 'torch.bfloat16':  # numpy has no bfloat16; float32 holds it exactly
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _torch_shapes(row):
    """The torch-layout shapes of a row's keys, for error messages (views: nothing is allocated)."""
    shapes = [value.shape for value in row.to_torch(np.broadcast_to(np.zeros((), np.float32), row.param.shape))]
    return shapes[0] if len(shapes) == 1 else tuple(shapes)


def load_torch_state_dict(model, state_dict):
    """Loads a torch state dict (torch tensors or numpy arrays) of the model's family, in any layout the family
    knows (detected from the keys), into `model`; returns it. An encoder's state dict loads into an MAE's encoder,
    the decoder keeping its weights (said in a warning).

    Nothing is written unless every key is present, expected and of the right shape: otherwise one ValueError
    lists every problem.
    """
    family = families.of(model)
    arrays = {key: _to_numpy(value) for key, value in state_dict.items()}
    detected = family.detect(arrays)
    kind, layout = detected if detected is not None else (None, family.layouts[0])
    encoder_only = kind == 'ViT' and family.is_mae(model)
    table = family.table(model, layout, encoder_only)
    family.upgrade(arrays, model)

    expected_keys = {key for row in table for key in row.keys}
    problems = [f'missing key {key!r}' for row in table for key in row.keys if key not in arrays]
    problems += [f'unexpected key {key!r}' for key in arrays if key not in expected_keys]
    values = {}  # id(param) -> (key, array in Flax layout)
    for row in table:
        if any(key not in arrays for key in row.keys):
            continue
        name = row.keys[0] if len(row.keys) == 1 else row.keys
        try:
            value = row.to_flax(*(arrays[key] for key in row.keys))
        except ValueError as error:  # arrays that cannot be combined, or a constant that is not the model's
            problems.append(str(error) if row.param is None else f'{name!r}: {error}')
            continue
        if row.param is None:
            continue
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            bad = int(np.size(value) - np.isfinite(value).sum())
            problems.append(
                f'{name!r} holds NaN or Inf ({bad} of {np.size(value)} values): a diverged or damaged checkpoint'
            )
        elif value.shape != row.param.shape:
            shapes = [arrays[key].shape for key in row.keys]
            problems.append(
                f'{name!r} has shape {shapes[0] if len(shapes) == 1 else tuple(shapes)}, expected {_torch_shapes(row)}'
            )
        elif id(row.param) in values and not np.array_equal(values[id(row.param)][1], value, equal_nan=True):
            problems.append(f'{name!r} differs from {values[id(row.param)][0]!r}; the model shares these weights')
        else:
            values.setdefault(id(row.param), (name, value))
    if problems:
        raise ValueError(
            f'state_dict does not fit {type(model).__name__} ({len(problems)} problems):\n  ' + '\n  '.join(problems)
        )
    if encoder_only:
        warnings.warn('loaded the encoder alone (the file has no decoder): the decoder keeps its weights', stacklevel=2)
    # copies: on CPU jnp.asarray can alias the numpy buffer, which may be the torch tensor's own memory
    params = {id(row.param): row.param for row in table if row.param is not None}
    stack.assign(
        (param, jnp.asarray(np.array(values[key][1], dtype=param.dtype, copy=True))) for key, param in params.items()
    )
    return model


def to_torch_state_dict(model, layout=None, encoder_only=False):
    """{torch key: numpy array} with exactly the family's torch keys, shapes and order in `layout` (default: the
    family's own: vit-pytorch's, facebookresearch/mae's); `encoder_only` leaves the decoder out."""
    state_dict = {}
    for row in torch_table(model, layout, encoder_only):
        value = None if row.param is None else np.asarray(row.param[...])
        for key, array in zip(row.keys, row.to_torch(value), strict=True):
            state_dict[key] = np.array(array, order='C')
    return state_dict


def unwrap_state_dict(contents, name):
    """The state dict inside `{'model': ...}` / `{'state_dict': ...}` wrappers that training scripts save, without
    DDP's `module.` or torch.compile's `_orig_mod.` prefix; `name` (the file) is for the error message."""
    state_dict = contents
    while isinstance(state_dict, dict) and not _holds_only_tensors(state_dict):
        inner = next((state_dict[key] for key in WRAPPER_KEYS if isinstance(state_dict.get(key), dict)), None)
        if inner is None:
            keys = ', '.join(map(str, list(state_dict)[:5]))
            raise ValueError(
                f'{name} holds a dict with no tensors at its top level nor under any of {", ".join(WRAPPER_KEYS)} '
                f'(its keys: {keys})'
            )
        state_dict = inner
    if not isinstance(state_dict, dict):
        raise TypeError(f'{name} holds a {type(state_dict).__name__}, not a state dict of tensors')
    stripped = True
    while stripped:
        stripped = False
        for prefix in STRIPPED_PREFIXES:
            if all(str(key).startswith(prefix) for key in state_dict):
                state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
                stripped = True
    return state_dict


def _holds_only_tensors(mapping):
    return bool(mapping) and all(hasattr(value, 'shape') for value in mapping.values())


def load_state_dict_file(path):
    """Reads a torch-layout state_dict from `.pt`/`.pth` (torch.load, weights_only) or `.safetensors`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'no such checkpoint file: {path}')
    if path.suffix == '.safetensors':
        return safetensors.numpy.load_file(path)
    if path.suffix in ('.pt', '.pth'):
        torch = _import_torch(path)
        return torch.load(path, map_location='cpu', weights_only=True)
    raise ValueError(f'expected a .pt, .pth or .safetensors file, got {path}')


def save_state_dict_file(state_dict, path):
    """Writes {torch key: array} as `.pt`/`.pth` (torch.save) or `.safetensors`, atomically."""
    path = Path(path)
    if path.suffix not in ('.pt', '.pth', '.safetensors'):
        raise ValueError(f'expected a .pt, .pth or .safetensors file name, got {path}')
    arrays = {key: np.ascontiguousarray(_to_numpy(value)) for key, value in state_dict.items()}
    for key, array in arrays.items():
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise TypeError(f'{key!r}: expected a numeric array or tensor, got {type(state_dict[key]).__name__}')
    with atomic_path(path) as tmp:
        if path.suffix == '.safetensors':
            safetensors.numpy.save_file(arrays, tmp)
        else:
            torch = _import_torch(path)
            torch.save({key: torch.from_numpy(value) for key, value in arrays.items()}, tmp)
    return path


def _import_torch(path):
    try:
        import torch
    except ImportError as error:
        raise ImportError(f'reading or writing {path} needs torch: pip install "twin-mae[torch]"') from error
    return torch

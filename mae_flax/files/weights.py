"""State-dict files (`.pt`/`.pth`/`.bin` through torch.load with weights_only, `.safetensors` without torch): the one
reader every command, the trainer and the classifier use, and the writer.

`read_weights` turns anything that is not a readable weights file (empty, truncated, a header that lies, a zip of
garbage, pickled Python objects) into one UsageError naming the file and what is wrong; `unwrap_state_dict` finds
the tensors inside the wrappers training scripts save.
"""

import pickle
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy

from mae_core.errors import UsageError
from mae_flax.files.paths import atomic_path

FLAX_FORMAT = 'mae_flax'  # a Flax checkpoint's safetensors metadata `format`
SUFFIXES = ('.pt', '.pth', '.safetensors')  # what a checkpoint file given by name may be
TORCH_SUFFIXES = ('.pt', '.pth', '.bin')  # torch.save files (.bin inside HuggingFace folders)
WRAPPER_KEYS = ('state_dict', 'model_state_dict', 'model', 'module')  # where training scripts nest the weights
STRIPPED_PREFIXES = ('module.', '_orig_mod.')  # DDP / DataParallel, and torch.compile


def one_line(error):
    return '; '.join(line.strip() for line in str(error).splitlines() if line.strip())


def to_numpy(value):
    """A torch tensor (without importing torch) or any array -> numpy."""
    if hasattr(value, 'detach'):
        value = value.detach().cpu()
        if str(value.dtype) == 'torch.bfloat16':  # numpy has no bfloat16; float32 holds it exactly
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def import_torch(path):
    try:
        import torch
    except ImportError as error:
        raise ImportError(f'reading or writing {path} needs torch: pip install "twin-mae[torch]"') from error
    return torch


def is_flax_file(path):
    """Whether a readable .safetensors file holds a Flax checkpoint (mae_flax keys, Flax layouts)."""
    with safetensors.safe_open(path, framework='np') as file:
        return (file.metadata() or {}).get('format') == FLAX_FORMAT or any(
            key.endswith('.kernel') for key in file.keys()
        )


def read_weights(path):
    """The contents of a weights file (a dict of arrays or tensors, possibly wrapped), or one UsageError naming the
    file: missing, empty, not of its kind, damaged, or holding Python objects other than tensors."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f'no such weights file: {path}')
    if path.suffix not in (*TORCH_SUFFIXES, '.safetensors'):
        raise UsageError(f'{path}: expected a .pt, .pth, .bin or .safetensors weights file')
    if path.stat().st_size == 0:
        raise UsageError(f'{path} is an empty file (0 bytes): not a checkpoint (an interrupted download?)')
    try:
        if path.suffix == '.safetensors':
            return safetensors.numpy.load_file(path)
        return import_torch(path).load(path, map_location='cpu', weights_only=True)
    except ImportError as error:
        raise UsageError(str(error)) from error
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
    except MemoryError as error:  # a damaged header that asks for more than the machine has
        raise UsageError(f'{path} is not a readable {path.suffix} checkpoint (its header asks for {error})') from error
    except Exception as error:  # torch and safetensors raise many types for a file that is not theirs
        reason = f'{type(error).__name__}: {one_line(error)}'[:300]
        raise UsageError(
            f'{path} is not a readable {path.suffix} checkpoint ({reason}); a damaged or partly downloaded file?'
        ) from error


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


def read_state_dict(path):
    """The torch-layout state dict of a weights file, unwrapped; one UsageError for anything else."""
    try:
        return unwrap_state_dict(read_weights(path), path)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from error


def _holds_only_tensors(mapping):
    return bool(mapping) and all(hasattr(value, 'shape') for value in mapping.values())


def load_state_dict_file(path):
    """Reads a torch-layout state_dict from `.pt`/`.pth` (torch.load, weights_only) or `.safetensors` (the library
    call behind read_weights, for scripts: FileNotFoundError / ValueError as Python's own errors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'no such checkpoint file: {path}')
    if path.suffix not in SUFFIXES:
        raise ValueError(f'expected a .pt, .pth or .safetensors file, got {path}')
    try:
        return read_weights(path)
    except UsageError as error:
        raise ValueError(str(error)) from error


def save_state_dict_file(state_dict, path):
    """Writes {torch key: array} as `.pt`/`.pth` (torch.save) or `.safetensors`, atomically."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f'expected a .pt, .pth or .safetensors file name, got {path}')
    arrays = {key: np.ascontiguousarray(to_numpy(value)) for key, value in state_dict.items()}
    for key, array in arrays.items():
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise TypeError(f'{key!r}: expected a numeric array or tensor, got {type(state_dict[key]).__name__}')
    with atomic_path(path) as tmp:
        if path.suffix == '.safetensors':
            safetensors.numpy.save_file(arrays, tmp)
        else:
            torch = import_torch(path)
            torch.save({key: torch.from_numpy(value) for key, value in arrays.items()}, tmp)
    return path

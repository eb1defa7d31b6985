"""HuggingFace `save_pretrained` folders: config.json (+ preprocessor_config.json) beside the weights, in one file
(`model.safetensors`, `pytorch_model.bin`) or in shards listed by an index (`model.safetensors.index.json`,
`pytorch_model.bin.index.json`). transformers is not needed: these are plain JSON, safetensors and torch files."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import safetensors.numpy

from mae_core.errors import UsageError
from mae_flax.files.paths import UMASK
from mae_flax.files.weights import read_state_dict, read_weights, unwrap_state_dict

# what save_pretrained writes, in the order transformers prefers them
WEIGHTS = ('model.safetensors', 'pytorch_model.bin')
INDEXES = ('model.safetensors.index.json', 'pytorch_model.bin.index.json')


def read_json(path):
    """A JSON file's contents; one UsageError naming the file if it is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise UsageError(f'{path} is not valid JSON ({error}): a hand-edited or damaged file?') from error
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f'{path} cannot be read ({error})') from error


def hf_config(folder):
    """The folder's HuggingFace config, if it is one (a dict with `model_type`), else None."""
    path = Path(folder) / 'config.json'
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and 'model_type' in config else None


def processor_config(folder):
    """preprocessor_config.json's contents, or None without one."""
    path = Path(folder) / 'preprocessor_config.json'
    return read_json(path) if path.is_file() else None


def state_dict(folder):
    """The torch state dict of a HuggingFace folder: its one weights file, or every shard its index lists, merged;
    one UsageError naming the file for a missing or damaged one."""
    folder = Path(folder)
    weights = [folder / name for name in WEIGHTS if (folder / name).is_file()]
    if weights:
        return read_state_dict(weights[0])
    indexes = [folder / name for name in INDEXES if (folder / name).is_file()]
    if not indexes:
        raise UsageError(f'{folder} has no {", ".join(WEIGHTS)} or a sharded index ({", ".join(INDEXES)})')
    index = read_json(indexes[0])
    weight_map = index.get('weight_map') if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise UsageError(f'{indexes[0]} has no weight_map: expected the index save_pretrained writes')
    merged = {}
    for shard in sorted(set(weight_map.values())):
        path = folder / shard
        if not path.is_file():
            raise UsageError(f'{indexes[0]} lists the shard {shard}, which is not in {folder} (a partial download?)')
        merged |= unwrap_state_dict(read_weights(path), path)
    missing = sorted(set(weight_map) - set(merged))
    if missing:
        raise UsageError(f'{indexes[0]} lists {missing[0]!r} ({len(missing)} missing), which no shard holds')
    return merged


def write_folder(folder, config, processor, arrays):
    """A new folder (or an empty one) with config.json, preprocessor_config.json and model.safetensors; nothing
    appears unless everything does."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f'{folder} exists: a HuggingFace export is a new folder')
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{folder.name}.', dir=folder.parent))
    try:
        (tmp / 'config.json').write_text(json.dumps(config, indent=2) + '\n')
        if processor is not None:
            (tmp / 'preprocessor_config.json').write_text(json.dumps(processor, indent=2) + '\n')
        safetensors.numpy.save_file(arrays, tmp / 'model.safetensors', metadata={'format': 'pt'})
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp's folder is its owner's alone
        if folder.exists():
            folder.rmdir()  # empty, checked above
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder

"""Weights between vit-pytorch / mae_torch state_dicts and mae_flax models, both ways, bit-exact.

One explicit table maps each torch key to the Flax parameter that holds it and how the array is laid out:
torch Linear weights are (out, in), Flax kernels (in, out); everything else is copied as it is. vit-pytorch's
MAE registers the encoder's patch embedding twice (`encoder.to_patch_embedding.{1,2,3}` and
`patch_to_emb.{0,1,2}`): both keys map to the same Flax parameters. torch is only imported to read or write
`.pt`/`.pth` files.
"""

import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from mae_flax.files import atomic_path
from mae_flax.mae import MAE
from mae_flax.vit import ViT

SAME, TRANSPOSE = 'same', 'transpose'
WRAPPER_KEYS = ('state_dict', 'model_state_dict', 'model', 'module')  # where training scripts nest the weights
STRIPPED_PREFIXES = ('module.', '_orig_mod.')  # DDP / DataParallel, and torch.compile


def _linear(key, linear):
    rows = [(f'{key}.weight', linear.kernel, TRANSPOSE)]
    if linear.bias is not None:
        rows.append((f'{key}.bias', linear.bias, SAME))
    return rows


def _layer_norm(key, norm):
    return [(f'{key}.weight', norm.scale, SAME), (f'{key}.bias', norm.bias, SAME)]


def _patch_embedding(key, embedding, first_index):
    i = first_index
    return (
        _layer_norm(f'{key}.{i}', embedding.patch_norm)
        + _linear(f'{key}.{i + 1}', embedding.linear)
        + _layer_norm(f'{key}.{i + 2}', embedding.norm)
    )


def _transformer(key, transformer):
    rows = _layer_norm(f'{key}.norm', transformer.norm)
    for i, (attn, ff) in enumerate(transformer.layers):
        block = f'{key}.layers.{i}'
        rows += _layer_norm(f'{block}.0.norm', attn.norm) + _linear(f'{block}.0.to_qkv', attn.to_qkv)
        if attn.to_out is not None:
            rows += _linear(f'{block}.0.to_out.0', attn.to_out)
        rows += _layer_norm(f'{block}.1.net.0', ff.norm)
        rows += _linear(f'{block}.1.net.1', ff.hidden) + _linear(f'{block}.1.net.4', ff.out)
    return rows


def _vit(prefix, vit):
    rows = [(f'{prefix}cls_token', vit.cls_token, SAME), (f'{prefix}pos_embedding', vit.pos_embedding, SAME)]
    rows += _patch_embedding(f'{prefix}to_patch_embedding', vit.to_patch_embedding, first_index=1)
    rows += _transformer(f'{prefix}transformer', vit.transformer)
    if vit.mlp_head is not None:
        rows += _linear(f'{prefix}mlp_head', vit.mlp_head)
    return rows


def torch_table(model):
    """[(torch key, Flax nnx.Param, layout)] in torch's state_dict order."""
    if isinstance(model, ViT):
        return _vit('', model)
    if not isinstance(model, MAE):
        raise TypeError(f'expected a mae_flax.MAE or mae_flax.ViT, got {type(model).__name__}')
    rows = [('mask_token', model.mask_token, SAME)]
    rows += _vit('encoder.', model.encoder)
    rows += _patch_embedding('patch_to_emb', model.encoder.to_patch_embedding, first_index=0)
    if model.enc_to_dec is not None:
        rows += _linear('enc_to_dec', model.enc_to_dec)
    rows += _transformer('decoder', model.decoder)
    rows += [('decoder_pos_emb.weight', model.decoder_pos_emb, SAME)]
    rows += _linear('to_pixels', model.to_pixels)
    return rows


def _to_numpy(value):
    """A torch tensor (without importing torch) or any array -> numpy."""
    if hasattr(value, 'detach'):
        value = value.detach().cpu()
        if str(value.dtype) == 'torch.bfloat16':  # numpy has no bfloat16; float32 holds it exactly
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _upgrade_legacy(arrays, prefix, pool):
    """vit-pytorch checkpoints from before its 2-D change: pos_embedding (1, n + 1, d), cls_token (1, 1, d)."""
    pos_key, cls_key = f'{prefix}pos_embedding', f'{prefix}cls_token'
    if pos_key not in arrays or arrays[pos_key].ndim != 3 or cls_key not in arrays:
        return
    pos_embedding, cls_token = arrays[pos_key][0], arrays[cls_key].reshape(-1, arrays[cls_key].shape[-1])
    if pool == 'mean':
        warnings.warn(
            'legacy mean-pool checkpoint: its cls token is dropped. MAE is unchanged; ViT logits differ slightly, '
            'since the legacy model also averaged the cls token',
            stacklevel=3,
        )
        pos_embedding, cls_token = pos_embedding[1:], cls_token[:0]
    arrays[pos_key], arrays[cls_key] = pos_embedding, cls_token


def load_torch_state_dict(model, state_dict):
    """Loads a vit-pytorch / mae_torch state_dict (torch tensors or numpy arrays) into `model`; returns it.

    Nothing is written unless every key is present, expected and of the right shape: otherwise one ValueError
    lists every problem.
    """
    table = torch_table(model)
    arrays = {key: _to_numpy(value) for key, value in state_dict.items()}
    vit = model.encoder if isinstance(model, MAE) else model
    _upgrade_legacy(arrays, 'encoder.' if isinstance(model, MAE) else '', vit.pool)

    expected_keys = [key for key, _, _ in table]
    problems = [f'missing key {key!r}' for key in expected_keys if key not in arrays]
    known_keys = set(expected_keys)
    problems += [f'unexpected key {key!r}' for key in arrays if key not in known_keys]
    values = {}  # id(param) -> (key, array in Flax layout)
    for key, param, layout in table:
        if key not in arrays:
            continue
        value = arrays[key].T if layout == TRANSPOSE else arrays[key]
        if value.shape != param.shape:
            torch_shape = param.shape[::-1] if layout == TRANSPOSE else param.shape
            problems.append(f'{key!r} has shape {arrays[key].shape}, expected {torch_shape}')
        elif id(param) in values and not np.array_equal(values[id(param)][1], value):
            problems.append(f'{key!r} differs from {values[id(param)][0]!r}; vit-pytorch shares these weights')
        else:
            values.setdefault(id(param), (key, value))
    if problems:
        raise ValueError(
            f'state_dict does not fit {type(model).__name__} ({len(problems)} problems):\n  ' + '\n  '.join(problems)
        )
    for _, param, _ in table:
        # a copy: on CPU jnp.asarray can alias the numpy buffer, which may be the torch tensor's own memory
        param.set_value(jnp.asarray(np.array(values[id(param)][1], dtype=param.dtype, copy=True)))
    return model


def to_torch_state_dict(model):
    """{torch key: numpy array} with exactly vit-pytorch's keys, shapes and order."""
    return {
        key: np.array(param[...].T if layout == TRANSPOSE else param[...], order='C')
        for key, param, layout in torch_table(model)
    }


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

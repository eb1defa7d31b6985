"""Weights between torch state dicts and mae_flax models, both ways, bit-exact: the engine.

Each family brings one table (mae_flax/<family>/table.py) of rows: a torch key, the Flax parameter that holds
it, and the two functions that move the array between layouts (a Linear weight is transposed, a token reshaped,
anything else copied); a scanned model's blocks are read and written per block (mae_flax.stack). The engine
checks every key and shape against the table, reports every problem at once, and loads nothing unless everything
fits. Keys that name the same parameter twice (vit-pytorch's shared patch
embedding) must hold the same values, and are all written back. Reading and writing files is
mae_flax.files.weights's (its functions are importable from here too).
"""

import warnings

import jax.numpy as jnp
import numpy as np

from mae_flax import families, stack
from mae_flax.files.weights import load_state_dict_file, save_state_dict_file, to_numpy, unwrap_state_dict

__all__ = [  # the files' functions are mae_flax.files.weights's, here too for scripts that import them from here
    'load_state_dict_file',
    'load_torch_state_dict',
    'save_state_dict_file',
    'to_torch_state_dict',
    'torch_table',
    'unwrap_state_dict',
]


def torch_table(model, layout=None, encoder_only=False):
    """[Row] of the model's family, in torch's state_dict order: for `layout` (default: the family's own) and for the
    whole model or, with `encoder_only`, the keys of its encoder alone."""
    family = families.of(model)
    return family.table(model, layout or family.layouts[0], encoder_only)


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
    arrays = {key: to_numpy(value) for key, value in state_dict.items()}
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
    stack.set_values(
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

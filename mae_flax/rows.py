"""Rows of a converter table: the torch state-dict key (or keys) of one Flax parameter and the two functions that
move it between the layouts. A transpose, a conv kernel, a fused qkv split into three keys, a reshaped token or a
fixed table are all rows, not cases in the engine.
"""

import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from flax import nnx

from mae_flax.fixed_tables import describe, is_computed


class Row(NamedTuple):
    keys: tuple  # torch keys: one, or several whose arrays make one parameter
    param: nnx.Variable | None  # a parameter or a FixedTable; None: a key written for layouts that need it
    to_flax: Callable  # (*torch arrays) -> the parameter's value; raises ValueError if they cannot be one
    to_torch: Callable  # the parameter's value -> tuple of torch arrays, one per key


def same(array):
    return array


def transposed(array):
    """torch Linear weights are (out, in), Flax kernels (in, out)."""
    return array.T


def one(key, param, to_flax=same, to_torch=same):
    """A row of one torch key."""
    return Row((key,), param, to_flax, lambda value: (to_torch(value),))


def linear(key, module):
    """torch.nn.Linear `key` <-> nnx.Linear `module`."""
    rows = [one(f'{key}.weight', module.kernel, transposed, transposed)]
    if module.bias is not None:
        rows.append(one(f'{key}.bias', module.bias))
    return rows


def layer_norm(key, module):
    """torch.nn.LayerNorm `key` <-> nnx.LayerNorm `module`."""
    return [one(f'{key}.weight', module.scale), one(f'{key}.bias', module.bias)]


def fused_linear(keys, module):
    """Several torch Linears (HuggingFace's query, key, value) <-> one nnx.Linear whose outputs are theirs,
    concatenated in order (timm's and facebookresearch/mae's fused qkv)."""
    count = len(keys)
    rows = [
        Row(
            tuple(f'{key}.weight' for key in keys),
            module.kernel,
            lambda *weights: np.concatenate(weights, axis=0).T,
            lambda kernel: tuple(np.split(kernel.T, count, axis=0)),
        )
    ]
    if module.bias is not None:
        rows.append(
            Row(
                tuple(f'{key}.bias' for key in keys),
                module.bias,
                lambda *biases: np.concatenate(biases),
                lambda bias: tuple(np.split(bias, count)),
            )
        )
    return rows


def fixed(key, table, computed, name):
    """A FixedTable (mae_flax.fixed_tables): loaded from the file and written back as the model holds it. A file's
    table that is not the `computed` one is kept (the model computes with it, as the program that wrote the file
    does), with one warning saying how far it is from the computed one."""

    def load(array):
        if array.shape == computed.shape and not is_computed(array, computed):
            warnings.warn(
                f"{key!r} is not the {name} ({describe(array, computed)}): the model computes with the file's "
                'table, as transformers does; it stays fixed and is written back with the model',
                stacklevel=2,
            )
        return array

    return Row((key,), table, load, lambda value: (value,))

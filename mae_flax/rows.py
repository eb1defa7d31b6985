"""Rows of a converter table: the torch state-dict key (or keys) of one Flax parameter and the two functions that
move it between the layouts. A transpose, a conv kernel, a fused qkv split into three keys, a reshaped token or a
fixed table the model computes itself are all rows, not cases in the engine.
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from flax import nnx


class Row(NamedTuple):
    keys: tuple  # torch keys: one, or several whose arrays make one parameter
    param: nnx.Param | None  # None: a constant the model computes (checked on load, written on export)
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


def constant(key, value, name):
    """A table the model computes (fixed sin-cos position embeddings): a file's copy must agree with it within
    float32 rounding (1e-5), or be of another grid size (recomputed, with a warning); export writes the model's."""

    def check(array):
        if array.shape == value.shape and not np.allclose(array, value, rtol=0, atol=1e-5):
            raise ValueError(
                f'{key!r} is not the fixed {name} this model computes (max difference '
                f'{np.abs(array - value).max():.2e}); this family never trains it'
            )
        return value

    return Row((key,), None, check, lambda _: (np.array(value),))

"""Rows of a converter table: a torch state-dict key, the Flax parameter that holds it, and the two functions that
move an array between the layouts. A transpose, a reshape or a split is a row, not a case in the engine.
"""

from collections.abc import Callable
from typing import NamedTuple

from flax import nnx


def same(array):
    return array


def transposed(array):
    """torch Linear weights are (out, in), Flax kernels (in, out)."""
    return array.T


class Row(NamedTuple):
    torch_key: str
    param: nnx.Param
    to_flax: Callable = same  # torch-layout array -> the parameter's layout
    to_torch: Callable = same  # and back


def linear(key, module):
    """torch.nn.Linear `key` <-> nnx.Linear `module`."""
    rows = [Row(f'{key}.weight', module.kernel, transposed, transposed)]
    if module.bias is not None:
        rows.append(Row(f'{key}.bias', module.bias))
    return rows


def layer_norm(key, module):
    """torch.nn.LayerNorm `key` <-> nnx.LayerNorm `module`."""
    return [Row(f'{key}.weight', module.scale), Row(f'{key}.bias', module.bias)]

"""A model's repeated blocks, run as a Python loop or scanned, with an optional rematerialisation policy.

Unscanned (the default), the blocks are an `nnx.List`: parameters per block (`blocks.3.attn.qkv.kernel`), the
layout of every Flax file and of torch's state dicts. Scanned (`scan_layers=True`, what mae-train runs), they are
one block made by `nnx.vmap` whose parameters carry a leading depth axis (`blocks.stacked.attn.qkv.kernel`,
shape (depth, ...)), run under `nnx.scan`: XLA compiles one block's program whatever the depth, and the optimizer
sees one leaf per kind of weight. Both compute the same function with the same parameters.

The converter and the Flax files keep the per-block view of either (`per_layer`): a scanned block `i` is a
`LayerView` whose parameters are `Slice`s of the stacked ones, so a table row names `blocks.3.attn.qkv.weight`
whichever way the model runs.

`remat` trades compute for memory, per block: 'none' keeps every activation for the backward pass; 'full'
recomputes the block's forward pass in its backward; 'dots_saveable' keeps matmul results and recomputes the rest
(layer norms, GELU, softmax); 'dots_with_no_batch_dims_saveable' keeps only the weight matmuls' results (the
attention score and value products are recomputed).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots_saveable': jax.checkpoint_policies.dots_saveable,
    'dots_with_no_batch_dims_saveable': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
STACKED = 'stacked'  # the attribute of a Scanned that holds the stacked block: its parameters' leading axis is depth


def check_remat(remat):
    if remat not in REMAT_POLICIES:
        raise ValueError(f'remat must be one of {", ".join(map(repr, REMAT_POLICIES))}, got {remat!r}')
    return remat


class Scanned(nnx.Module):
    """`depth` blocks made by `make_block(rngs)` (or `make_block(rngs, index)`, `index` a traced int32, with
    `indexed`), held as one block with stacked parameters."""

    def __init__(self, make_block, depth, *, rngs, indexed=False):
        if depth < 1:
            raise ValueError(f'a scanned stack needs at least one block, got depth {depth}')
        self.depth = depth
        # weights -> weights, applied to each block's parameters inside the scan before the block runs: the
        # trainer's FSDP all-gather (once per block and pass; its backward reduce-scatters the gradients)
        self.gather = None

        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0, 0), out_axes=0, axis_size=depth)
        def make(rngs, index):
            return make_block(rngs, index) if indexed else make_block(rngs)

        self.stacked = make(rngs, jnp.arange(depth, dtype=jnp.int32))

    def __len__(self):
        return self.depth

    def __iter__(self):
        return (LayerView(self.stacked, index) for index in range(self.depth))

    def __getitem__(self, index):
        if not -self.depth <= index < self.depth:
            raise IndexError(f'block {index} of {self.depth}')
        return LayerView(self.stacked, index % self.depth)


def make_layers(make_block, depth, *, scan_layers=False, rngs, indexed=False):
    """The blocks: an nnx.List of `depth` blocks, or one Scanned stack of them. With `indexed`, block i is
    `make_block(rngs, i)`: a Python int in the loop, a traced int32 under the scan (what differs per block, a drop
    path rate, must then be the block's state, not a Python attribute)."""
    if scan_layers:
        return Scanned(make_block, depth, rngs=rngs, indexed=indexed)
    return nnx.List((make_block(rngs, index) if indexed else make_block(rngs)) for index in range(depth))


def run_layers(layers, x, apply=None, remat='none'):
    """x through every block in order; `apply(block, x)` calls one (default: `block(x)`)."""
    apply = apply or _call
    policy = REMAT_POLICIES[check_remat(remat)]
    scanned = isinstance(layers, Scanned)
    if scanned and layers.gather is not None:
        # inside the remat: the backward pass gathers the weights again rather than keep every block's gathered
        # copy from the forward pass (FSDP's point); with remat 'none' the copies are kept, one gather a step
        apply = _gathering(apply, layers.gather)
    if remat != 'none':
        # prevent_cse only matters outside a scan (and costs there): keep it for the loop, as jax.checkpoint does
        apply = nnx.remat(apply, policy=policy, prevent_cse=not scanned)
    if scanned:
        return nnx.scan(apply, in_axes=(0, nnx.Carry), out_axes=nnx.Carry)(layers.stacked, x)
    for block in layers:
        x = apply(block, x)
    return x


def _call(block, x):
    return block(x)


def _gathering(apply, gather):
    """`apply` on a copy of the block whose parameters went through `gather` (any other state it changes, a
    dropout stream's count, is written back)."""

    def gathered(block, x):
        graphdef, params, rest = nnx.split(block, nnx.Param, ...)
        local = nnx.merge(graphdef, jax.tree.map(gather, params), rest)
        out = apply(local, x)
        nnx.update(block, nnx.state(local, nnx.Not(nnx.Param)))
        return out

    return gathered


class Slice:
    """Block `index`'s part of a stacked parameter: what a converter row holds for a scanned model. Reading gives
    the block's array; writing one slice copies the whole stack, so loaders write slices together (`assign`)."""

    def __init__(self, stacked, index):
        self.stacked, self.index = stacked, index

    @property
    def shape(self):
        return self.stacked.shape[1:]

    @property
    def dtype(self):
        return self.stacked.dtype

    @property
    def size(self):
        return self.stacked.size // self.stacked.shape[0]

    def __getitem__(self, key):
        return self.stacked[...][self.index][key]

    def set_value(self, value):
        self.stacked.set_value(self.stacked[...].at[self.index].set(value))


class LayerView:
    """Block `index` of a scanned stack seen as an unscanned block: its submodules are views, its parameters
    Slices, anything else (sizes, None for a missing bias) the block's own."""

    def __init__(self, module, index):
        self._module, self._index = module, index

    def __getattr__(self, name):
        return self._view(getattr(self._module, name))

    def __iter__(self):  # a block that is an nnx.List (vit-pytorch's [attention, feed-forward] pair)
        return (self._view(item) for item in self._module)

    def __getitem__(self, index):
        return self._view(self._module[index])

    def __len__(self):
        return len(self._module)

    def _view(self, value):
        if isinstance(value, nnx.Variable):
            return Slice(value, self._index)
        if isinstance(value, nnx.Module):
            return LayerView(value, self._index)
        return value


def set_values(pairs):
    """Sets each (parameter, value) pair, where a parameter is an nnx.Variable or a Slice: the slices of one stacked
    parameter are written in one update (every slice of it must be given)."""
    stacks = {}
    for param, value in pairs:
        if isinstance(param, Slice):
            stack = stacks.setdefault(id(param.stacked), (param.stacked, {}))
            stack[1][param.index] = value
        else:
            param.set_value(value)
    for stacked, slices in stacks.values():
        if sorted(slices) != list(range(stacked.shape[0])):
            missing = sorted(set(range(stacked.shape[0])) - set(slices))
            raise ValueError(f'blocks {missing} of a stacked parameter {stacked.shape} were not given')
        stacked.set_value(
            jnp.asarray(np.stack([np.asarray(slices[index]) for index in range(len(slices))]), stacked.dtype)
        )


def per_layer(model, kinds=(nnx.Param,)):
    """{dotted path: nnx.Param or Slice} of every parameter (or Variable of `kinds`), scanned blocks named per block
    as unscanned ones (`blocks.3.attn.qkv.kernel`): the keys of a Flax file, whichever way the model runs."""
    params = {}
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, kinds):
            continue
        path = tuple(map(str, path))
        if STACKED in path:
            at = path.index(STACKED)
            for index in range(node.shape[0]):
                params['.'.join((*path[:at], str(index), *path[at + 1 :]))] = Slice(node, index)
        else:
            params['.'.join(path)] = node
    return params

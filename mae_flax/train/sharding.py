"""One mesh with axes ('data', 'fsdp'): the batch is split over both, parameters and optimizer state over fsdp.

With fsdp=1 (the default) this is plain data parallelism: every device holds all parameters. With fsdp > 1 each
block's weights are all-gathered inside the scanned block, once per pass (`FsdpGather`), and their gradients
reduce-scattered back to the parameters' sharding; tensors under `min_size` elements stay replicated.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mae_core.errors import UsageError
from mae_flax.stack import STACKED

BATCH_AXES = ('data', 'fsdp')


def make_mesh(data, fsdp, devices=None):
    """A (data, fsdp) mesh over `devices` (default: every device of the job); data=-1 takes every device not used
    by fsdp. Pass a TPU topology's devices to compile for a slice this machine does not have."""
    devices = jax.devices() if devices is None else list(devices)
    num_devices = len(devices)
    if fsdp < 1 or num_devices % fsdp:
        raise UsageError(f'config.mesh.fsdp must be a positive divisor of the {num_devices} devices, got {fsdp}')
    data = num_devices // fsdp if data == -1 else data
    if data < 1 or data * fsdp > num_devices:
        raise UsageError(f'config.mesh data={data} x fsdp={fsdp} needs {data * fsdp} devices, there are {num_devices}')
    axis_types = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types, devices=devices[: data * fsdp])


def fsdp_spec(shape, fsdp_size, stacked=False, min_size=0):
    """Shard the largest dimension that fsdp divides; replicate when none does, and tensors of fewer than
    `min_size` elements per block (norm scales, biases: gathering them costs more than holding them). The leading
    axis of a `stacked` parameter (scanned blocks) is its depth, never sharded: the scan slices it."""
    first = 1 if stacked else 0
    if fsdp_size > 1 and math.prod(shape[first:]) >= min_size:
        for dim in sorted(range(first, len(shape)), key=lambda d: -shape[d]):
            if shape[dim] % fsdp_size == 0:
                return P(*(['fsdp' if d == dim else None for d in range(len(shape))]))
    return P()


def state_shardings(abstract_state, mesh, min_size=0):
    """NamedShardings for a train state: params and opt_state by the fsdp rule, the rest replicated."""
    fsdp_size = mesh.shape['fsdp']

    def rule(path, leaf):
        top = path[0].key
        stacked = any(getattr(key, 'key', None) == STACKED for key in path)
        spec = fsdp_spec(leaf.shape, fsdp_size, stacked, min_size) if top in ('params', 'opt_state') else P()
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map_with_path(rule, abstract_state)


def batch_sharding(mesh):
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh):
    return NamedSharding(mesh, P())


def global_batch(local_batch, mesh):
    """This process's rows -> one global array over the mesh (each process passes only its own rows); a dict of
    arrays (images and labels) -> a dict of global arrays."""
    return jax.tree.map(lambda rows: jax.make_array_from_process_local_data(batch_sharding(mesh), rows), local_batch)


def put_global(value, sharding):
    """A host array that every process holds in full -> a global array with `sharding`."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


@dataclasses.dataclass(frozen=True)
class FsdpGather:
    """One block's weight, sharded over fsdp as `fsdp_spec` says, -> replicated (an all-gather); its gradient,
    partial on each device, -> the weight's sharding (a reduce-scatter, not an all-reduce). Set as the `gather`
    of a model's scanned blocks (mae_flax.stack.Scanned), where it runs once per block per pass."""

    mesh: jax.sharding.Mesh
    min_size: int = 0
    dtype: str | None = None  # the compute dtype: a sharded weight is cast before it is gathered (bf16: half the bytes)

    def __call__(self, weight):
        spec = fsdp_spec(weight.shape, self.mesh.shape['fsdp'], min_size=self.min_size)
        if spec == P():
            return weight  # replicated: nothing to gather
        if self.dtype is not None and jnp.issubdtype(weight.dtype, jnp.floating):
            # the Linear that uses it casts it so anyway; its gradient comes back in this dtype and is cast up
            weight = weight.astype(self.dtype)
        return _gather(weight, NamedSharding(self.mesh, spec), NamedSharding(self.mesh, P()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _gather(weight, sharded, whole):
    return jax.lax.with_sharding_constraint(weight, whole)


def _gather_forward(weight, sharded, whole):
    return _gather(weight, sharded, whole), None


def _gather_backward(sharded, whole, _, gradient):
    return (jax.lax.with_sharding_constraint(gradient, sharded),)


_gather.defvjp(_gather_forward, _gather_backward)


def gather_to_one_device(tree):
    """Every process's view of a tree of global arrays, fully replicated (sharded parameters gathered). One process
    copies to one device: process_allgather would compile a small program per parameter shape, at every export (over
    a minute of the test suite's CPU time, measured)."""
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: jax.device_put(x, jax.devices()[0]), tree)
    return multihost_utils.process_allgather(tree, tiled=True)

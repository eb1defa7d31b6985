"""One mesh with axes ('data', 'fsdp'): the batch is split over both, parameters and optimizer state over fsdp.

With fsdp=1 (the default) this is plain data parallelism: every device holds all parameters.
"""

import math

import jax
import numpy as np
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
    """This process's rows -> one global array over the mesh (each process passes only its own rows)."""
    return jax.make_array_from_process_local_data(batch_sharding(mesh), local_batch)


def put_global(value, sharding):
    """A host array that every process holds in full -> a global array with `sharding`."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

"""Strict numerics for the parity suite, and the devices it runs on.

float32 matmuls must be true float32 on both sides: JAX otherwise runs them in TF32 on recent GPUs and bf16
passes on TPU, and torch in TF32 where allowed; either alone moves results by ~1e-3 relative, far beyond the
fp32 tolerances below. The bf16 tests opt back into fast matmuls explicitly.
"""

import jax
import pytest
import torch

jax.config.update('jax_default_matmul_precision', 'highest')
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def _device_pairs():
    """(name, torch device, jax device) for every platform present; the CPU always."""
    pairs = [('cpu', torch.device('cpu'), jax.devices('cpu')[0])]
    backend = jax.default_backend()
    if backend == 'gpu' and torch.cuda.is_available():
        pairs.append(('gpu', torch.device('cuda'), jax.devices('gpu')[0]))
    elif backend == 'tpu':  # torch has no TPU here: its side runs on the CPU
        pairs.append(('tpu', torch.device('cpu'), jax.devices('tpu')[0]))
    return pairs


DEVICE_PAIRS = _device_pairs()


@pytest.fixture(params=DEVICE_PAIRS, ids=[name for name, _, _ in DEVICE_PAIRS])
def devices(request):
    """(name, torch device, jax device); JAX arrays made inside the test land on the jax device."""
    name, torch_device, jax_device = request.param
    with jax.default_device(jax_device):
        yield name, torch_device, jax_device

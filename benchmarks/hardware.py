"""What the step runs on: threads, devices, and the peak FLOP/s that MFU is measured against."""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

# dense peak TFLOP/s by device-kind substring: bf16, and fp32 as each library runs it by default (TF32 on
# NVIDIA: JAX's default matmul precision, and torch with float32_matmul_precision 'high', which we set)
PEAK_TFLOPS = {
    'H200': {'bf16': 989.0, 'fp32': 494.7},
    'H100': {'bf16': 989.0, 'fp32': 494.7},
    'A100': {'bf16': 312.0, 'fp32': 156.0},
    'TPU v4': {'bf16': 275.0, 'fp32': 275.0},
    'TPU v5 lite': {'bf16': 197.0, 'fp32': 197.0},
    'TPU v5p': {'bf16': 459.0, 'fp32': 459.0},
    'TPU v6': {'bf16': 918.0, 'fp32': 918.0},
}


def set_threads(threads):
    """Runs torch and XLA on the same `threads` cores.

    XLA's CPU thread pool has no public size setting; it sizes itself from the CPUs the process may run on, so we
    pin the process (os.sched_setaffinity) to `threads` cores before XLA's CPU client starts, which also bounds
    torch, and set torch's intra-op pool to the same number. Returns the number of threads in use.
    """
    available = sorted(os.sched_getaffinity(0))
    if threads is None:
        threads = len(available)
    if not 1 <= threads <= len(available):
        raise ValueError(f'threads must be between 1 and the {len(available)} CPUs this process may use, got {threads}')
    os.sched_setaffinity(0, available[:threads])
    torch.set_num_threads(threads)
    return threads


def jax_device():
    return jax.devices()[0]


def torch_device():
    return torch.device('cuda') if torch.cuda.is_available() else torch.device('cpu')


def describe():
    """The machine, for the results file."""
    device = jax_device()
    info = {
        'jax_platform': device.platform,
        'jax_device': device.device_kind,
        'torch_device': str(torch_device()),
        'cpus': len(os.sched_getaffinity(0)),
        'torch_threads': torch.get_num_threads(),
        'jax': jax.__version__,
        'torch': torch.__version__,
    }
    if torch.cuda.is_available():
        info['torch_device_name'] = torch.cuda.get_device_name()
    try:
        with open('/proc/cpuinfo') as f:
            info['cpu'] = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        info['cpu'] = 'unknown'
    return info


def matmul_tflops(library, dtype, m, k, n, *, repeats=20):
    """Measured TFLOP/s of one (m, k) @ (k, n) matmul in 'jax' or 'torch', median of `repeats` runs."""
    if library == 'jax':
        jax_dtype = jnp.bfloat16 if dtype == 'bf16' else jnp.float32
        a, b = jnp.ones((m, k), jax_dtype), jnp.ones((k, n), jax_dtype)
        matmul = jax.jit(jnp.matmul)
        matmul(a, b).block_until_ready()

        def run():
            matmul(a, b).block_until_ready()
    elif library == 'torch':
        torch_dtype = torch.bfloat16 if dtype == 'bf16' else torch.float32
        device = torch_device()
        a, b = torch.ones(m, k, dtype=torch_dtype, device=device), torch.ones(k, n, dtype=torch_dtype, device=device)

        def run():
            torch.mm(a, b)
            if device.type == 'cuda':
                torch.cuda.synchronize()

        run()
    else:
        raise ValueError(f"library must be 'jax' or 'torch', got {library!r}")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / float(np.median(times)) / 1e12


def peak_tflops(dtype):
    """(TFLOP/s, where the number comes from): the datasheet for known accelerators, else the faster of a large
    JAX and torch matmul measured here (the CPU has no datasheet number for the instructions XLA and oneDNN use)."""
    kind = jax_device().device_kind
    for name, peaks in PEAK_TFLOPS.items():
        if name in kind:
            return peaks[dtype], f'datasheet {name} dense'
    size = 2048
    measured = max(matmul_tflops(library, dtype, size, size, size, repeats=5) for library in ('jax', 'torch'))
    return measured, f'measured {size}^3 matmul, faster of JAX and torch'

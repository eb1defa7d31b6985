"""The matmul floor of one training step: every matmul of forward and backward, timed alone in XLA and torch.

    python -m benchmarks.floor --preset tiny --threads 2

A step cannot be faster than its matmuls run back to back at the speed each library reaches on them alone; the
gap between the step time and this floor is everything else (norms, GELU, softmax, copies, the optimizer,
dispatch). Results go to benchmarks/results/floor-PRESET-PLATFORM.json.
"""

import argparse
import collections
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import hardware
from benchmarks.presets import PRESETS, train_flops_per_image
from benchmarks.train_step import RESULTS_DIR, write_results


def _linear(rows, in_features, out_features):
    """(batch, m, k, n) of a linear layer's forward, input gradient and weight gradient."""
    return [
        (1, rows, in_features, out_features),
        (1, rows, out_features, in_features),
        (1, in_features, rows, out_features),
    ]


def _attention(batch, heads, tokens, dim_head):
    """Forward q k^T and attn v, and their four gradients, each a batch of batch * heads matmuls."""
    bh = batch * heads
    scores, values = (bh, tokens, dim_head, tokens), (bh, tokens, tokens, dim_head)
    return [scores, values, (bh, tokens, tokens, dim_head), (bh, dim_head, tokens, tokens)] + [values, scores]


def _transformer(batch, tokens, dim, depth, heads, dim_head, mlp_dim):
    rows, inner = batch * tokens, heads * dim_head
    block = (
        _linear(rows, dim, 3 * inner)
        + _attention(batch, heads, tokens, dim_head)
        + _linear(rows, inner, dim)
        + _linear(rows, dim, mlp_dim)
        + _linear(rows, mlp_dim, dim)
    )
    return block * depth


def step_matmuls(preset):
    """Every matmul of one training step as (batch, m, k, n), forward and backward."""
    p = preset
    b, patch_dim = p.batch_size, p.channels * p.patch_size**2
    visible = p.num_patches - p.num_masked
    matmuls = _linear(b * p.num_patches, patch_dim, p.dim)
    matmuls += _transformer(b, visible, p.dim, p.depth, p.heads, p.dim_head, p.mlp_dim)
    if p.dim != p.decoder_dim:
        matmuls += _linear(b * visible, p.dim, p.decoder_dim)
    matmuls += _transformer(
        b, p.num_patches, p.decoder_dim, p.decoder_depth, p.decoder_heads, p.decoder_dim_head, 4 * p.decoder_dim
    )
    matmuls += _linear(b * p.num_masked, p.decoder_dim, patch_dim)
    return matmuls


def time_matmul(library, dtype, shape, repeats):
    """Median seconds of one (batch, m, k, n) matmul."""
    batch, m, k, n = shape
    if library == 'jax':
        jax_dtype = jnp.bfloat16 if dtype == 'bf16' else jnp.float32
        a, b = jnp.ones((batch, m, k), jax_dtype), jnp.ones((batch, k, n), jax_dtype)
        matmul = jax.jit(jnp.matmul)

        def run():
            matmul(a, b).block_until_ready()
    else:
        torch_dtype = torch.bfloat16 if dtype == 'bf16' else torch.float32
        device = hardware.torch_device()
        a = torch.ones(batch, m, k, dtype=torch_dtype, device=device)
        b = torch.ones(batch, k, n, dtype=torch_dtype, device=device)

        def run():
            torch.mm(a[0], b[0]) if batch == 1 else torch.bmm(a, b)  # mm: as nn.Linear runs
            if device.type == 'cuda':
                torch.cuda.synchronize()

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_floor(preset, dtype='fp32', repeats=10):
    """{library: seconds} for all of the step's matmuls back to back, each shape timed alone; shapes that occur
    several times are timed once. Also the step's matmul FLOPs."""
    counts = collections.Counter(step_matmuls(preset))
    floor = {}
    for library in ('jax', 'torch'):
        floor[library] = sum(count * time_matmul(library, dtype, shape, repeats) for shape, count in counts.items())
    flops = sum(count * 2 * np.prod(shape) for shape, count in counts.items())
    return {'matmul_flops': int(flops), 'floor_s': floor, 'shapes': len(counts)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='tiny')
    parser.add_argument('--dtype', choices=('fp32', 'bf16'), default='fp32')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--threads', type=int, help='CPU threads for both torch and XLA (default: all available)')
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)

    hardware.set_threads(args.threads)
    preset = PRESETS[args.preset]
    result = matmul_floor(preset, args.dtype, args.repeats)
    result.update(
        preset=preset.name,
        dtype=args.dtype,
        train_flops=train_flops_per_image(preset) * preset.batch_size,
        machine=hardware.describe(),
    )
    print(f'{preset.name} {args.dtype}: {result["matmul_flops"] / 1e9:.2f} GFLOP of matmuls per step')
    for library, seconds in result['floor_s'].items():
        print(f'  {library:5s} floor {1e3 * seconds:7.1f} ms  ({result["matmul_flops"] / seconds / 1e9:.1f} GFLOP/s)')
    platform = result['machine']['jax_platform']
    print(f'wrote {write_results(result, args.out or RESULTS_DIR / f"floor-{preset.name}-{platform}.json")}')


if __name__ == '__main__':
    main()

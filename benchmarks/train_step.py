"""Times one MAE training step (forward, backward, AdamW) in mae_flax, mae_torch and vit-pytorch, side by side.

    python -m benchmarks.train_step --preset tiny --threads 2           # CPU
    python -m benchmarks.train_step --preset vit_b16 --dtypes bf16      # GPU/TPU

Every backend is built and warmed up first, then the timed steps run interleaved in rounds (a few steps of each
backend in turn), so that a noisy neighbour slows all of them alike. The table gives the median step time, with
the 10th-90th percentile spread, and each row's step time as a multiple of mae_flax's at the same dtype.
"""

import argparse
import dataclasses
import datetime
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

import mae_torch
from benchmarks import hardware
from benchmarks.presets import PRESETS, train_flops_per_image
from mae_flax.configs import mae as mae_configs
from mae_flax.files import atomic_path
from mae_flax.train import sharding, steps
from mae_torch.reference import load_vit_pytorch

BACKENDS = ('flax', 'torch', 'torch_compile', 'vit_pytorch')
DTYPES = ('fp32', 'bf16')
RESULTS_DIR = Path(__file__).parent / 'results'

# the MAE paper's AdamW, the same in optax and torch
LEARNING_RATE, BETAS, WEIGHT_DECAY = 1.5e-4, (0.9, 0.95), 0.05


@dataclasses.dataclass
class Runner:
    backend: str
    dtype: str
    step: object  # () -> None: one training step, finished when it returns
    peak_memory_bytes: object  # () -> int | None, called after warm-up
    note: str = ''


def flax_runner(preset, dtype):
    """mae-train's own step (steps.StepProgram: the jitted, donated step the trainer runs, scanned blocks, its
    AdamW and schedule) on one device, over a fixed uint8 batch; masking noise drawn inside the step."""
    config = mae_configs.get_config('tiny' if preset.spec.num_frames is None else 'video_tiny')
    config.model = preset.spec.to_dict()
    config.update(batch_size=preset.batch_size, dtype='bfloat16' if dtype == 'bf16' else 'float32')
    config.optim.update(base_lr=LEARNING_RATE * 256 / preset.batch_size, b1=BETAS[0], b2=BETAS[1])
    config.optim.update(weight_decay=WEIGHT_DECAY, warmup_steps=0)
    mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    program = steps.pretrain_program(config, mesh)
    state = jax.jit(program.init, out_shardings=program.shardings)()
    shape = (preset.batch_size, *preset.spec.input_shape)  # images (b, h, w, c), or clips (b, t, h, w, c)
    images = jax.random.randint(jax.random.key(3), shape, 0, 256, jnp.int32)
    images = jax.device_put(images.astype(jnp.uint8), sharding.batch_sharding(mesh))
    train_step = program.train_step
    holder = {'state': state, 'compiled': None}

    def step():
        if holder['compiled'] is None:  # ahead of time, so that the memory analysis needs no second compilation
            holder['compiled'] = train_step.lower(holder['state'], images).compile()
        holder['state'], metrics = holder['compiled'](holder['state'], images)
        jax.block_until_ready((holder['state'], metrics))

    def peak_memory_bytes():
        # what XLA allocates for the step: inputs, outputs and temporaries, less the donated buffers it reuses
        memory = holder['compiled'].memory_analysis()
        if memory is None:
            return None
        return (
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            + memory.temp_size_in_bytes
            - memory.alias_size_in_bytes
        )

    runner = Runner('flax', dtype, step, peak_memory_bytes)
    # for the recompilation test and for profiles: the jitted step, its state and its batch
    runner.train_step, runner.holder, runner.images = train_step, holder, images
    return runner


def torch_runner(preset, dtype, backend):
    device = hardware.torch_device()
    torch.manual_seed(0)
    model = preset.vit_pytorch_model(load_vit_pytorch()) if backend == 'vit_pytorch' else mae_torch.build(preset.spec)
    model = model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LEARNING_RATE, betas=BETAS, weight_decay=WEIGHT_DECAY, fused=True
    )
    forward = torch.compile(model) if backend == 'torch_compile' else model
    frames = () if preset.spec.num_frames is None else (preset.spec.num_frames,)
    images = torch.randn(preset.batch_size, *frames, 3, preset.image_size, preset.image_size, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == 'bf16'):
            out = forward(images)
            loss = out[0] if isinstance(out, tuple) else out  # VideoMAE returns (loss, logits)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == 'cuda':
            torch.cuda.synchronize()

    def peak_memory_bytes():
        return torch_peak_memory_bytes(step, device)

    return Runner(backend, dtype, step, peak_memory_bytes)


def torch_peak_memory_bytes(step, device):
    """The most memory torch's tensors hold during one step: the allocator's peak on CUDA, the profiler's memory
    timeline on the CPU (torch keeps no CPU allocator statistics)."""
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        step()
        return torch.cuda.max_memory_allocated()
    profiler = torch.profiler
    with profiler.profile(
        activities=[profiler.ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
    ) as prof:
        step()
    with tempfile.TemporaryDirectory() as directory, warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # export_memory_timeline is deprecated for CUDA's snapshots
        path = os.path.join(directory, 'timeline.json')
        prof.export_memory_timeline(path, device='cpu')
        with open(path) as f:
            _, sizes = json.load(f)
    return int(np.sum(sizes, axis=1).max()) if sizes else None


def make_runner(preset, backend, dtype):
    if backend == 'flax':
        return flax_runner(preset, dtype)
    if backend in BACKENDS:
        return torch_runner(preset, dtype, backend)
    raise ValueError(f'unknown backend {backend!r}; expected one of {BACKENDS}')


def _time_backends(preset, backends, dtypes, steps, warmup, rounds):
    """(rows, [(row, first step seconds, timed step seconds)]): every (backend, dtype) built and warmed up, then
    their timed steps interleaved in rounds."""
    rows, timed = [], []
    for backend in backends:
        for dtype in dtypes:
            row = {'backend': backend, 'dtype': dtype, 'batch_size': preset.batch_size}
            rows.append(row)
            if backend != 'flax' and hardware.torch_device().type == 'cpu' and jax.default_backend() != 'cpu':
                row['error'] = f'skipped: torch has no {jax.default_backend()} device, and its CPU is no peer'
                continue
            try:
                runner = make_runner(preset, backend, dtype)
                start = time.perf_counter()
                runner.step()
                first_step = time.perf_counter() - start
                for _ in range(warmup - 1):
                    runner.step()
                row['peak_memory_mb'] = _megabytes(runner.peak_memory_bytes())
            except Exception as error:  # noqa: BLE001 - one failing backend must not lose the others' results
                row['error'] = f'{type(error).__name__}: {error}'
                continue
            timed.append((row, runner, first_step, []))

    per_round = -(-steps // rounds)
    for round_index in range(rounds):
        for _, runner, _, times in timed:
            for _ in range(min(per_round, steps - round_index * per_round)):
                start = time.perf_counter()
                runner.step()
                times.append(time.perf_counter() - start)
    return rows, [(row, first_step, times) for row, _, first_step, times in timed]


def benchmark(preset, *, backends=BACKENDS, dtypes=DTYPES, steps=50, warmup=3, rounds=5, peak_flops=None):
    """Builds and warms up every (backend, dtype), then times `steps` steps of each, interleaved in `rounds`.

    Returns the results as a JSON-ready dict. `peak_flops` ({dtype: (FLOP/s, source)}) defaults to
    hardware.peak_tflops. A backend that fails records its error instead of a time.
    """
    if steps < 1 or warmup < 1 or rounds < 1:
        raise ValueError(f'steps, warmup and rounds must be at least 1, got {steps}, {warmup}, {rounds}')
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision('high')  # TF32 where the GPU has it, as JAX's default precision
    try:
        rows, timed = _time_backends(preset, backends, dtypes, steps, warmup, rounds)
    finally:
        torch.set_float32_matmul_precision(precision)
    peak_flops = peak_flops or {dtype: hardware.peak_tflops(dtype) for dtype in dtypes}
    flops_per_image = train_flops_per_image(preset)
    for row, first_step, times in timed:
        median = float(np.median(times))
        images_per_s = preset.batch_size / median
        row.update(
            step_ms=1e3 * median,
            step_ms_p10=1e3 * float(np.percentile(times, 10)),
            step_ms_p90=1e3 * float(np.percentile(times, 90)),
            images_per_s=images_per_s,
            # the first step's time beyond a steady step: tracing and compiling (JAX, torch.compile) or warm-up
            compile_s=max(first_step - median, 0.0),
            tflops=flops_per_image * images_per_s / 1e12,
            mfu=flops_per_image * images_per_s / (1e12 * peak_flops[row['dtype']][0]),
            steps=len(times),
        )
    for row in rows:
        flax_row = next((r for r in rows if r['backend'] == 'flax' and r['dtype'] == row['dtype']), None)
        if 'step_ms' in row and flax_row is not None and 'step_ms' in flax_row:
            row['step_time_vs_flax'] = row['step_ms'] / flax_row['step_ms']
            row['images_per_s_vs_flax'] = row['images_per_s'] / flax_row['images_per_s']

    return {
        'preset': dataclasses.asdict(preset),
        'train_flops_per_image': flops_per_image,
        'peak_tflops': {dtype: {'value': value, 'source': source} for dtype, (value, source) in peak_flops.items()},
        'machine': hardware.describe(),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'steps': steps,
        'warmup': warmup,
        'rounds': rounds,
        'results': rows,
    }


def _megabytes(num_bytes):
    return None if num_bytes is None else num_bytes / 2**20


def format_table(results, markdown=False):
    header = ('backend', 'dtype', 'step ms (p10-p90)', 'images/s', 'compile s', 'peak MB', 'MFU', 'time/flax')
    lines = [header]
    for row in results['results']:
        if 'error' in row:
            lines.append((row['backend'], row['dtype'], 'failed: ' + row['error'][:60], '', '', '', '', ''))
            continue
        memory = row.get('peak_memory_mb')
        lines.append(
            (
                row['backend'],
                row['dtype'],
                f'{row["step_ms"]:.1f} ({row["step_ms_p10"]:.1f}-{row["step_ms_p90"]:.1f})',
                f'{row["images_per_s"]:.0f}',
                f'{row["compile_s"]:.1f}',
                '-' if memory is None else f'{memory:.0f}',
                f'{100 * row["mfu"]:.1f}%',
                f'{row["step_time_vs_flax"]:.2f}x' if 'step_time_vs_flax' in row else '-',
            )
        )
    if markdown:
        text = ['| ' + ' | '.join(line) + ' |' for line in lines]
        text.insert(1, '|' + '---|' * len(header))
        return '\n'.join(text)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ['  '.join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines]
    text.insert(1, '  '.join('-' * width for width in widths))
    return '\n'.join(text)


def write_results(results, path):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(results, indent=2) + '\n')
    return path


def _parse_list(text, allowed, what):
    items = [item.strip() for item in text.split(',') if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(f'unknown {what} {unknown}; choose from {", ".join(allowed)}')
    return tuple(items)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='tiny')
    parser.add_argument('--batch-size', type=int, help="overrides the preset's batch size")
    parser.add_argument('--backends', type=lambda s: _parse_list(s, BACKENDS, 'backends'), default=BACKENDS)
    parser.add_argument('--dtypes', type=lambda s: _parse_list(s, DTYPES, 'dtypes'), default=DTYPES)
    parser.add_argument('--steps', type=int, default=50, help='timed steps per backend')
    parser.add_argument('--warmup', type=int, default=3, help='untimed steps per backend, the first compiles')
    parser.add_argument('--rounds', type=int, default=5, help='the timed steps are interleaved in this many rounds')
    parser.add_argument('--threads', type=int, help='CPU threads for both torch and XLA (default: all available)')
    parser.add_argument('--out', type=Path, help='results file (default: benchmarks/results/PRESET-PLATFORM.json)')
    parser.add_argument('--markdown', action='store_true', help='print the table as markdown, for the README')
    args = parser.parse_args(argv)

    hardware.set_threads(args.threads)
    preset = PRESETS[args.preset]
    if args.batch_size is not None:
        preset = dataclasses.replace(preset, batch_size=args.batch_size)
    backends = args.backends
    if preset.spec.family != 'vit_pytorch' and 'vit_pytorch' in backends:  # vit-pytorch builds its own family only
        backends = tuple(backend for backend in backends if backend != 'vit_pytorch')
        print(f'{preset.name} is a {preset.spec.family}-family model: vit-pytorch has none, its backend is left out')
    results = benchmark(
        preset, backends=backends, dtypes=args.dtypes, steps=args.steps, warmup=args.warmup, rounds=args.rounds
    )
    machine = results['machine']
    print(
        f'{preset.name}, batch {preset.batch_size}, {train_flops_per_image(preset) / 1e9:.3f} GFLOP per {"clip" if preset.spec.num_frames else "image"}'
    )
    print(f'{machine["jax_device"]} ({machine["cpu"]}, {machine["cpus"]} CPUs), torch on {machine["torch_device"]}')
    print(format_table(results, markdown=args.markdown))
    path = write_results(results, args.out or RESULTS_DIR / f'{preset.name}-{machine["jax_platform"]}.json')
    print(f'wrote {path}')


if __name__ == '__main__':
    main()

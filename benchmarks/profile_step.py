"""Where mae_flax's training step spends its time: per-op times from a jax.profiler trace, by op kind.

    python -m benchmarks.profile_step --preset tiny --threads 1

XLA names each op of the compiled step after its kind (`dot.12`, `ynn_fusion.40` for a matmul or reduction
handed to YNNPACK, `copy_bitcast_fusion.3` for a fused copy); this sums the trace's op times by that kind and
lists the largest ops with their HLO shapes. Also prints torch's profile of mae_torch's step, for comparison.
Writes benchmarks/results/profile-PRESET-PLATFORM.txt.
"""

import argparse
import collections
import gzip
import json
import re
import tempfile
import time
from pathlib import Path

import jax
import torch

from benchmarks import hardware
from benchmarks.presets import PRESETS
from benchmarks.train_step import RESULTS_DIR, flax_runner, torch_runner
from mae_flax.files import atomic_path


def _hlo_lines(compiled):
    """{op name: its HLO line} of the compiled step."""
    lines = {}
    for line in compiled.as_text().splitlines():
        match = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = (.*)', line)
        if match:
            lines.setdefault(match.group(1), match.group(2))
    return lines


def flax_profile(preset, dtype, steps, top):
    runner = flax_runner(preset, dtype)
    for _ in range(3):
        runner.step()
    start = time.perf_counter()
    for _ in range(steps):
        runner.step()
    step_ms = 1e3 * (time.perf_counter() - start) / steps
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            for _ in range(steps):
                runner.step()
        (trace_file,) = Path(directory).rglob('*perfetto_trace.json.gz')
        with gzip.open(trace_file) as f:
            trace = json.load(f)
    events = trace['traceEvents'] if isinstance(trace, dict) else trace
    hlo = _hlo_lines(runner.holder['compiled'])
    per_op = collections.Counter()
    for event in events:
        if event.get('ph') == 'X' and event['name'] in hlo:  # XLA ops only, not Python or runtime frames
            per_op[event['name']] += event.get('dur', 0) / 1e3 / steps
    per_kind = collections.Counter()
    for name, ms in per_op.items():
        per_kind[re.sub(r'[.\d]+$', '', name)] += ms
    lines = [
        f'mae_flax {preset.name} {dtype}: {step_ms:.1f} ms per step untraced, {sum(per_op.values()):.1f} ms in ops'
    ]
    lines += ['', 'by kind:'] + [f'{ms:8.2f} ms  {kind}' for kind, ms in per_kind.most_common()]
    lines += ['', f'largest {top} ops:'] + [
        f'{ms:8.2f} ms  {name:28s} {hlo[name][:140]}' for name, ms in per_op.most_common(top)
    ]
    return lines


def torch_profile(preset, dtype, steps, top):
    runner = torch_runner(preset, dtype, 'torch')
    for _ in range(3):
        runner.step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            runner.step()
    table = prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=top, max_name_column_width=40)
    return [f'mae_torch eager {preset.name} {dtype}, {steps} steps:', table]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='tiny')
    parser.add_argument('--dtype', choices=('fp32', 'bf16'), default='fp32')
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--top', type=int, default=25)
    parser.add_argument('--threads', type=int, help='CPU threads for both torch and XLA (default: all available)')
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)

    threads = hardware.set_threads(args.threads)
    preset = PRESETS[args.preset]
    lines = [f'{hardware.describe()}, {threads} threads', '']
    lines += flax_profile(preset, args.dtype, args.steps, args.top) + ['']
    lines += torch_profile(preset, args.dtype, args.steps, args.top)
    text = '\n'.join(lines) + '\n'
    print(text)
    path = args.out or RESULTS_DIR / f'profile-{preset.name}-{jax.default_backend()}.txt'
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    print(f'wrote {path}')


if __name__ == '__main__':
    main()

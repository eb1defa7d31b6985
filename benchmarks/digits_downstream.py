"""What MAE pretraining buys downstream, on the embedded digits (CPU): for each seed, pretrain the MAE without labels
(mae-train's `digits` config, the train split's images), then fine-tune and linearly probe its encoder
(mae-finetune `digits`, mae-linprobe `digits_linprobe`), and do the same from a random encoder. Writes
benchmarks/results/digits_downstream-cpu.json: top-1 (final and best) per seed and run, mean and spread, wall time.

    python -m benchmarks.digits_downstream --seeds 0 1 2 --out /tmp/digits_runs
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

from mae_flax.configs import classify as classify_configs
from mae_flax.configs import mae as mae_configs
from mae_flax.files import atomic_path
from mae_flax.train import classify, pretrain

RESULTS = Path(__file__).parent / 'results'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--out', default='/tmp/digits_downstream', help='where the runs go (fresh folders)')
    parser.add_argument('--pretrain_steps', type=int, default=None, help='default: the digits config')
    parser.add_argument('--steps', type=int, default=None, help='fine-tuning / probing steps; default: the configs')
    parser.add_argument('--note', default='', help='what else ran on the machine, for the record')
    parser.add_argument('--json', default=str(RESULTS / 'digits_downstream-cpu.json'))
    args = parser.parse_args()
    out = Path(args.out)
    runs, timings = [], {}
    started = time.perf_counter()
    for seed in args.seeds:
        config = mae_configs.get_config('digits')
        config.seed = seed
        if args.pretrain_steps:
            config.total_steps = args.pretrain_steps
        clock = time.perf_counter()
        pretrained = pretrain.train(config, out / f'mae_{seed}')
        timings.setdefault('pretrain', []).append(time.perf_counter() - clock)
        for mode, variant in (('finetune', 'digits'), ('linprobe', 'digits_linprobe')):
            for init in ('mae', 'random'):
                config = classify_configs.get_config(variant)
                config.seed = seed
                if args.steps:
                    config.total_steps = args.steps
                clock = time.perf_counter()
                summary = classify.train(
                    config, out / f'{mode}_{init}_{seed}', init_from=out / f'mae_{seed}' if init == 'mae' else None
                )
                timings.setdefault(f'{mode}', []).append(time.perf_counter() - clock)
                runs.append(
                    dict(
                        seed=seed,
                        mode=mode,
                        init=init,
                        top1=summary['last_top1'],
                        best_top1=summary['best_top1'],
                        pretrain_eval_loss=pretrained['last_eval_loss'],
                    )
                )
    table = {}
    for mode in ('finetune', 'linprobe'):
        for init in ('mae', 'random'):
            values = [run['top1'] for run in runs if run['mode'] == mode and run['init'] == init]
            table[f'{mode}/{init}'] = dict(
                mean=float(np.mean(values)),
                std=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                min=float(np.min(values)),
                max=float(np.max(values)),
                top1=values,
            )
    result = dict(
        date=time.strftime('%Y-%m-%d'),
        machine=f'{platform.machine()}, {os.cpu_count()} cores, jax on {jax.devices()[0].platform}',
        note=args.note,
        jax=jax.__version__,
        seeds=args.seeds,
        table=table,
        runs=runs,
        wall_seconds=dict(total=time.perf_counter() - started, **{k: float(np.mean(v)) for k, v in timings.items()}),
    )
    with atomic_path(Path(args.json)) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + '\n')
    for name, row in table.items():
        print(f'{name:18s} top-1 {row["mean"]:.2f} +- {row["std"]:.2f}  ({", ".join(f"{v:.2f}" for v in row["top1"])})')
    print(f'wall time {result["wall_seconds"]["total"]:.0f} s; written {args.json}')


if __name__ == '__main__':
    main()

"""What a pretraining recipe's reconstructions are worth on photographs it never trained on, against its wall time.

    python -m benchmarks.heldout_recipes                      # every recipe below, one after another
    python -m benchmarks.heldout_recipes --only mae_tiny_small_colour

Each recipe is a `mae-train` command (a config variant and overrides) run as its own process on the embedded photos;
the run measures the held-out figure itself at every image step (mae_flax.heldout: masked-patch error of the
pasted reconstruction over the mean colour fill's, on the held-out photos' crops and fixed masks; the training-free
blur's figure beside it). Written: the figure against step (the curve), the wall time of the whole command and the
last figures, to benchmarks/results/heldout_recipes.json (a recipe's earlier row is replaced).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mae_flax.files import atomic_path

RESULTS = Path(__file__).parent / 'results' / 'heldout_recipes.json'
SMALL_CROPS_AND_COLOUR = ('--config.data.crop_scale=(0.005, 0.1)', '--config.data.color_permute=1.0',
                          '--config.data.color_invert=0.5')  # fmt: skip
RECIPES = {
    # mae-train's default (configs/official.py: photos): 36 px in 3 px patches, small crops and colours, 1250 steps
    'photos': ('photos', ()),
    # rejected: the previous default, 32 px in 4 px patches (an 8 x 8 grid), 3500 steps, lr 2e-2, 4 data threads
    'photos_32px_p4_3500': (
        'photos',
        (
            '--config.model.encoder.img_size=32',
            '--config.model.encoder.patch_size=4',
            '--config.total_steps=3500',
            '--config.optim.base_lr=0.02',
            '--config.data.num_threads=4',
        ),
    ),
    # rejected: the same 12 x 12 grid in 4 px patches (48 px): more pixels a patch, no better
    'photos_48px_p4': ('photos', ('--config.model.encoder.img_size=48', '--config.model.encoder.patch_size=4')),
    # the first default: vit_pytorch family, learned positions, 32 px in 4 px patches, crops of 20-100% of a photo
    'tiny': ('tiny', ()),
    'tiny_small_colour': ('tiny', SMALL_CROPS_AND_COLOUR),
    # its best: longer (the patch LayerNorm hides brightness and contrast from it: parity_tests/test_vit_pytorch.py)
    'tiny_small_colour_3000': ('tiny', (*SMALL_CROPS_AND_COLOUR, '--config.total_steps=3000')),
    # the official family: fixed sin-cos positions, a cls token
    'mae_tiny': ('mae_tiny', ()),
    'mae_tiny_small_colour': ('mae_tiny', SMALL_CROPS_AND_COLOUR),
    'mae_tiny_small_colour_2000': ('mae_tiny', (*SMALL_CROPS_AND_COLOUR, '--config.total_steps=2000')),
    'mae_tiny_small_colour_3500': ('mae_tiny', (*SMALL_CROPS_AND_COLOUR, '--config.total_steps=3500')),
    'mae_tiny_small_colour_2000_lr2x': (
        'mae_tiny',
        (*SMALL_CROPS_AND_COLOUR, '--config.total_steps=2000', '--config.optim.base_lr=0.02'),
    ),
    # 16 px crops in 2 px patches: the same 64 patches, each a quarter of the pixels
    'mae_tiny_16px_p2_small_colour': (
        'mae_tiny',
        (*SMALL_CROPS_AND_COLOUR, '--config.model.encoder.img_size=16', '--config.model.encoder.patch_size=2'),
    ),
}


def run(name, variant, flags, image_every):
    with tempfile.TemporaryDirectory() as workdir:
        command = [
            sys.executable, '-m', 'mae_flax.train', f'--config=mae_flax/configs/mae.py:{variant}',
            f'--workdir={workdir}/run', f'--config.image_every={image_every}', '--config.compilation_cache=', *flags,
        ]  # fmt: skip
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1])
        seconds = time.perf_counter() - start
        if result.returncode:
            raise SystemExit(f'{name} failed:\n{result.stderr[-3000:]}')
        records = [json.loads(line) for line in (Path(workdir) / 'run' / 'metrics.jsonl').read_text().splitlines()]
    curve = [
        dict(step=r['step'], heldout_ratio=r.get('heldout_ratio'), blur_ratio=r['blur_ratio'])
        for r in records
        if 'blur_ratio' in r
    ]
    return dict(
        name=name, variant=variant, flags=list(flags), wall_seconds=round(seconds, 1), cpus=os.cpu_count(),
        date=time.strftime('%Y-%m-%d'), heldout_ratio=curve[-1]['heldout_ratio'], blur_ratio=curve[-1]['blur_ratio'],
        curve=curve,
    )  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--only', nargs='*', choices=sorted(RECIPES), help='these recipes (default: all)')
    parser.add_argument('--image_every', type=int, default=250, help='steps between two measurements')
    args = parser.parse_args(argv)
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    for name in args.only or RECIPES:
        variant, flags = RECIPES[name]
        row = run(name, variant, flags, args.image_every)
        rows = [other for other in rows if other['name'] != name] + [row]
        print(f'{name}: {row["wall_seconds"]:.0f} s, held-out {row["heldout_ratio"]:.2f}, blur {row["blur_ratio"]:.2f}')
        with atomic_path(RESULTS) as tmp:
            tmp.write_text(json.dumps(rows, indent=2) + '\n')
    print(f'wrote {RESULTS}')


if __name__ == '__main__':
    main()

"""mae-parity CHECKPOINT: the torch model and its Flax conversion compute the same MAE, stage by stage.

    mae-parity mae.pt --heads 8 --decoder_heads 16             # 4 random images, a table, exit 0 or 1
    mae-parity mae.pt --images val/ --batch 8 --grads --json   # your images, the gradients too, for CI

The checkpoint is loaded into mae_torch as it is and into mae_flax through the converter; both get the same
images and masking noise, in strict float32 (no TF32, no bf16 matmul passes), so what is left is summation order.
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

from mae_core.errors import UsageError
from mae_flax.cli.common import (
    add_model_flags,
    flag,
    given_flags,
    image_files,
    make_parser,
    masking_noise,
    note,
    read_images,
    run_cli,
)
from mae_flax.files import videos
from mae_flax.model_files import read_model, torch_model
from mae_flax.parity import compare_outputs, flax_outputs, strict_float32, table, torch_outputs

PROG = 'mae-parity'
VIDEO_STRIDE = 4  # frames between two of a clip, for a video model's --images (VideoMAE's on Kinetics)
TOLERANCE_HELP = """\
tolerances: a stage passes when max |torch - flax| <= atol + rtol * max |torch|; "rel diff" is
max |torch - flax| / max |torch|. Both backends compute in float32 with different summation orders, so a
correct conversion differs by rounding only: ~1e-7 relative on well-scaled images, up to ~1e-3 on the
embeddings of badly conditioned ones (e.g. 50 + 0.01 * randn: the first LayerNorm subtracts a mean 5000 times
the spread, which multiplies float32's rounding by 5000); gradients sum over the batch and every token and
reach ~1e-3 there too. A wrong conversion (a transposed or swapped weight, a wrong LayerNorm, a missing
position row) is off by O(1), so the default rtol 1e-2 separates the two with a wide margin on either side;
tighten it for well-scaled inputs. heads vs dim_head cannot be checked this way: both sides use the config.

exit codes: 0 every stage passes, 1 some stage does not, 2 bad input (one line on stderr)."""


def build_parser():
    parser = make_parser(
        PROG, 'Check that a torch MAE checkpoint and its Flax conversion compute the same function.', TOLERANCE_HELP
    )
    parser.add_argument(
        'checkpoint', metavar='CHECKPOINT', help='torch layout (.pt/.pth/.safetensors), Flax, or a workdir'
    )
    parser.add_argument(
        '--images',
        metavar='DIR',
        help='a folder of images (of videos for a video model), resized to the model size (default: randn)',
    )
    parser.add_argument('--batch', type=int, default=4, help='how many images (default 4)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random images and the masking noise')
    parser.add_argument(
        '--device', choices=('cpu', 'gpu', 'tpu'), default='cpu', help='(default cpu; torch on CPU for tpu)'
    )
    parser.add_argument('--rtol', type=float, default=1e-2, help='relative tolerance (default 1e-2, see below)')
    parser.add_argument('--atol', type=float, default=1e-6, help='absolute tolerance (default 1e-6)')
    parser.add_argument('--grads', action='store_true', help='also compare the gradient of every weight and the input')
    parser.add_argument('--json', action='store_true', help='print the results as JSON instead of a table')
    parser.add_argument(*flag('--step'), type=int, help='with a workdir: which checkpoint (default: the latest)')
    add_model_flags(parser)
    return parser


def devices(name):
    """(torch device, jax device) for --device."""
    import torch

    try:
        jax_device = jax.devices(name)[0]
    except RuntimeError as error:
        raise UsageError(f'--device {name}: JAX has no {name} here (it has {jax.default_backend()})') from error
    if name == 'gpu':
        if not torch.cuda.is_available():
            raise UsageError('--device gpu: torch sees no CUDA device (is a CPU-only torch installed?)')
        return torch.device('cuda'), jax_device
    return torch.device('cpu'), jax_device  # torch has no TPU: its side runs on the CPU


def input_images(args, spec, batch):
    """(b, h, w, c) float32 images (clips (b, t, h, w, c) for a video model) as the model sees them: the folder's
    first `batch`, standardised with the model's pixel statistics, or standard normal ones."""
    if args.images is None:
        return np.random.default_rng(args.seed).standard_normal((batch, *spec.input_shape), np.float32)
    if spec.num_frames is not None:  # a folder of video files: the middle clip of each, a frame every 4
        folder = Path(args.images)
        files = (
            sorted(p for p in folder.iterdir() if p.suffix.lower() in videos.VIDEO_SUFFIXES) if folder.is_dir() else []
        )
        if not files:
            raise UsageError(
                f'--images {folder}: expected a folder of video files ({", ".join(videos.VIDEO_SUFFIXES)})'
            )
        clips = [
            videos.read_clip(p, spec.num_frames, VIDEO_STRIDE, spec.image_size, spec.channels) for p in files[:batch]
        ]
        return spec.normalize(np.stack(clips))
    files = image_files(args.images)[:batch]
    if len(files) < batch:
        note(PROG, f'{args.images} has {len(files)} images, fewer than --batch {batch}: using them all')
    return spec.normalize(read_images(files, spec.image_size, spec.channels, PROG))


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch < 1:
        raise UsageError(f'--batch must be at least 1, got {args.batch}')
    torch_device, jax_device = devices(args.device)
    loaded = read_model(args.checkpoint, given_flags(args), step=args.step)
    loaded.needs_decoder('mae-parity (it compares the MAE loss and its stages)')
    if loaded.spec.mae is None:
        raise UsageError(f'{args.checkpoint} is an encoder without an MAE decoder; mae-parity compares MAE checkpoints')
    images = input_images(args, loaded.spec, args.batch)
    noise = masking_noise(args.seed, len(images), loaded.spec.num_patches)

    with strict_float32():
        torch_out, torch_grads = torch_outputs(torch_model(loaded), images, noise, torch_device, args.grads)
        with jax.default_device(jax_device):
            inputs = jax.device_put(images, jax_device), jax.device_put(noise, jax_device)
            flax_out, flax_grads = flax_outputs(loaded.model, *inputs, grads=args.grads)
    stages, gradients = compare_outputs(torch_out, flax_out, args.rtol, args.atol, torch_grads, flax_grads)
    passed = all(row['passed'] for row in stages + gradients)

    source = args.images or f'random normal (seed {args.seed})'
    if args.json:
        report = dict(checkpoint=str(args.checkpoint), device=args.device, images=source, batch=len(images))
        report |= dict(rtol=args.rtol, atol=args.atol, passed=passed, stages=stages, gradients=gradients)
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(
            f'{args.checkpoint} on {args.device}: {len(images)} images from {source}; rtol {args.rtol}, atol {args.atol}'
        )
        print(table(stages, 'stage'))
        if gradients:
            print(table(gradients, 'gradient of'))
        failed = sum(not row['passed'] for row in stages + gradients)
        print(f'{"all pass" if passed else f"{failed} of {len(stages) + len(gradients)} FAIL"}')
    return 0 if passed else 1


def run(argv=None):
    run_cli(PROG, main, argv)


if __name__ == '__main__':
    run()

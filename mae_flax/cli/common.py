"""What the three commands share: user errors as one line and exit 2, the model flags, reading images."""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from mae_flax.patchify import pair

USAGE_ERROR = 2
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp')


class UsageError(Exception):
    """A mistake in what the user passed: reported as one line on stderr and exit code 2, never a traceback."""


def run_cli(prog, main, argv=None):
    """Runs `main(argv) -> exit code` and exits with it; a UsageError becomes `prog: error: ...` and exit 2."""
    show_warning = warnings.showwarning

    def one_line_warning(message, category, *args, **kwargs):
        print(f'{prog}: warning: {message}', file=sys.stderr)

    warnings.showwarning = one_line_warning
    try:
        code = main(argv)
    except UsageError as error:
        print(f'{prog}: error: {" ".join(str(error).split())}', file=sys.stderr)
        code = USAGE_ERROR
    finally:
        warnings.showwarning = show_warning
    sys.exit(code)


def note(prog, message):
    print(f'{prog}: note: {message}', file=sys.stderr)


def size(text):
    """'32' -> 32, '32x48' -> (32, 48): height x width."""
    parts = text.lower().split('x')
    if len(parts) not in (1, 2) or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f'expected a positive size like 224 or 224x160 (height x width), got {text!r}')
    return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))


def add_model_flags(parser):
    """The hyperparameters the weights do not hold, or hold ambiguously. Unset flags come from the JSON beside
    the checkpoint (written by mae-convert) or are inferred from tensor shapes."""
    group = parser.add_argument_group(
        'model hyperparameters',
        'Needed only where the tensor shapes are ambiguous and no CHECKPOINT.json (written by mae-convert) lies '
        'beside the checkpoint. Every value is checked against the shapes.',
    )
    group.add_argument('--image_size', type=size, help='e.g. 224 or 224x160 (inferred from pos_embedding if square)')
    group.add_argument('--patch_size', type=size, help='e.g. 16 or 16x8 (inferred from the patch embedding if square)')
    group.add_argument('--channels', type=int, help='image channels (assumed 3 when unset)')
    group.add_argument('--heads', type=int, help='encoder attention heads (or give --dim_head)')
    group.add_argument('--dim_head', type=int, help='encoder dimension per head (or give --heads)')
    group.add_argument('--pool', choices=('cls', 'mean'), help='inferred, except for legacy 3-D pos_embedding files')
    group.add_argument('--decoder_heads', type=int, help='MAE decoder attention heads (or give --decoder_dim_head)')
    group.add_argument('--decoder_dim_head', type=int, help='MAE decoder dimension per head')
    group.add_argument('--masking_ratio', type=float, help='fraction of patches masked (assumed 0.75 when unset)')
    group.add_argument(
        '--norm_pix_loss',
        action=argparse.BooleanOptionalAction,
        default=None,
        help='per-patch standardised targets (assumed off when unset)',
    )


MODEL_FLAGS = (
    'image_size',
    'patch_size',
    'channels',
    'heads',
    'dim_head',
    'pool',
    'decoder_heads',
    'decoder_dim_head',
    'masking_ratio',
    'norm_pix_loss',
)


def given_flags(args):
    """{field: value} for the model flags the user set."""
    return {name: getattr(args, name) for name in MODEL_FLAGS if getattr(args, name) is not None}


def read_images(paths, image_size, channels, prog):
    """Image files -> float32 (b, h, w, c) in [0, 1], each resized to the model's size (said on stderr)."""
    if channels not in (1, 3):
        raise UsageError(f'the model takes {channels}-channel images; image files give 1 (gray) or 3 (RGB)')
    height, width = pair(image_size)
    images = []
    for path in map(Path, paths):
        if not path.is_file():
            raise UsageError(f'no such image: {path}')
        try:
            with Image.open(path) as image:
                image = image.convert('L' if channels == 1 else 'RGB')
                if image.size != (width, height):
                    note(prog, f'resized {path} from {image.height}x{image.width} to {height}x{width}, the model size')
                    image = image.resize((width, height), Image.Resampling.BICUBIC)
                array = np.asarray(image, dtype=np.float32) / 255
        except OSError as error:  # PIL's UnidentifiedImageError is an OSError
            raise UsageError(f'cannot read image {path}: {error}') from error
        images.append(array.reshape(height, width, channels))
    return np.stack(images)


def image_files(folder):
    """The image files in `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f'no such image folder: {folder}')
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {folder}')
    return files


def masking_noise(seed, batch, num_patches):
    """The masking noise, drawn once with numpy so that both backends mask the same patches for a seed."""
    return np.random.default_rng(seed).random((batch, num_patches), dtype=np.float32)

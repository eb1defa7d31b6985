"""What the commands share: user errors as one line and exit 2, flags in either spelling, the model flags,
reading images."""

import argparse
import errno
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from mae_core.errors import UsageError
from mae_core.fields import pair
from mae_flax.files import images
from mae_flax.quiet import OrbaxEchoes

USAGE_ERROR = 2
WRITE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp')


def flag(name):
    """'--decoder_heads' -> ('--decoder_heads', '--decoder-heads'): people type either; --help shows the first."""
    return (name, '--' + name[2:].replace('_', '-')) if '_' in name else (name,)


def _shown(option_strings):
    """The spellings --help shows: underscores, as the config fields and mae-train's flags are spelled."""
    return [
        option
        for option in option_strings
        if not option.startswith('--') or '-' not in option.removeprefix('--').removeprefix('no-')
    ]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def _format_action_invocation(self, action):
        shown = _shown(action.option_strings)
        if len(shown) == len(action.option_strings):
            return super()._format_action_invocation(action)
        return super()._format_action_invocation(
            argparse.Action(shown, action.dest, nargs=action.nargs, metavar=action.metavar)
        )


class BooleanFlag(argparse.BooleanOptionalAction):
    """--x / --no-x, in both spellings, shown in one."""

    def format_usage(self):
        return ' | '.join(_shown(self.option_strings))


def make_parser(prog, description, epilog):
    return argparse.ArgumentParser(
        prog=prog,
        allow_abbrev=False,  # '--dim 8' must not pass for --dim_head
        description=description,
        epilog=epilog,
        formatter_class=HelpFormatter,
    )


def run_cli(prog, main, argv=None):
    """Runs `main(argv) -> exit code` and exits with it; a UsageError, or a folder that cannot be written, becomes
    `prog: error: ...` and exit 2 (outputs are written atomically: nothing half-written is left)."""
    show_warning = warnings.showwarning

    def one_line_warning(message, category, *args, **kwargs):
        print(f'{prog}: warning: {message}', file=sys.stderr)

    warnings.showwarning = one_line_warning
    OrbaxEchoes.install()  # reading a damaged workdir: the commands say which checkpoint they skipped, once
    try:
        code = main(argv)
    except UsageError as error:
        print(f'{prog}: error: {" ".join(str(error).split())}', file=sys.stderr)
        code = USAGE_ERROR
    except OSError as error:  # the machine's refusal to write OUT (a read-only folder, a full disk); else a bug
        if error.errno not in WRITE_ERRNOS:
            raise
        print(f'{prog}: error: cannot write {error.filename}: {error.strerror}', file=sys.stderr)
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


def numbers(text):
    """'0.5,0.5,0.5' -> (0.5, 0.5, 0.5)."""
    try:
        return tuple(float(part) for part in text.split(','))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f'expected comma-separated numbers like 0.5,0.5,0.5, got {text!r}') from error


MODEL_FLAGS = {
    # field: (type, help)
    'image_size': (size, 'e.g. 224 or 224x160 (inferred from pos_embedding if square)'),
    'patch_size': (size, 'e.g. 16 or 16x8 (inferred from the patch embedding if square)'),
    'channels': (int, 'image channels (assumed 3 when unset)'),
    'heads': (int, 'encoder attention heads (or give --dim_head)'),
    'dim_head': (int, 'encoder dimension per head (or give --heads)'),
    'pool': (str, "'cls' or 'mean': inferred, except for legacy 3-D pos_embedding files"),
    'layer_norm_eps': (float, 'LayerNorm epsilon (assumed 1e-5 for vit-pytorch, 1e-6 for the official family)'),
    'decoder_heads': (int, 'MAE decoder attention heads (or give --decoder_dim_head)'),
    'decoder_dim_head': (int, 'MAE decoder dimension per head'),
    'masking_ratio': (float, 'fraction of patches masked (assumed 0.75 when unset)'),
    # the official family's (facebookresearch/mae, HuggingFace) names for what its weights do not say
    'img_size': (size, 'official family: e.g. 224 or 224x160 (inferred from pos_embed if square)'),
    'num_heads': (int, 'official family: encoder attention heads (not in the weights)'),
    'decoder_num_heads': (int, 'official family: decoder attention heads (not in the weights)'),
    'mask_ratio': (float, 'official and videomae families: fraction of patches masked (assumed 0.75; videomae 0.9)'),
    'pixel_mean': (
        numbers,
        "per-channel mean the model's inputs were standardised with, e.g. 0.485,0.456,0.406 "
        "(assumed 0 for vit-pytorch, pixels in [0, 1] as they are; ImageNet's for the official family)",
    ),
    'pixel_std': (numbers, "per-channel std, e.g. 0.229,0.224,0.225 (assumed 1, or ImageNet's)"),
}


def add_model_flags(parser):
    """The hyperparameters the weights do not hold, or hold ambiguously: for files this project did not write.
    Unset flags come from the JSON beside the checkpoint or are inferred from tensor shapes."""
    group = parser.add_argument_group(
        'model hyperparameters',
        'Needed only for files that no CHECKPOINT.json (written by mae-convert and mae-train) lies beside, and '
        'only where the tensor shapes are ambiguous. Every value is checked against the shapes.',
    )
    for name, (kind, help_text) in MODEL_FLAGS.items():
        group.add_argument(*flag(f'--{name}'), type=kind, help=help_text)
    group.add_argument(
        *flag('--norm_pix_loss'),
        action=BooleanFlag,
        default=None,
        help='per-patch standardised targets (assumed off when unset)',
    )


def given_flags(args):
    """{field: value} for the model flags the user set."""
    names = (*MODEL_FLAGS, 'norm_pix_loss')
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def read_images(paths, image_size, channels, prog):
    """Image files -> float32 (b, h, w, c) pixels in [0, 1], each read as training reads it (`images.read_file`: 16-bit
    scaled, EXIF rotation, transparency over white) and resized to the model's size (said on stderr)."""
    if channels not in (1, 3):
        raise UsageError(f'the model takes {channels}-channel images; image files give 1 (gray) or 3 (RGB)')
    height, width = pair(image_size)
    arrays = []
    for path in paths:
        image = images.read_file(path, channels)
        if image.size != (width, height):
            # the photo's aspect kept: the centre crop of the model's aspect, then resized to the model's size
            scale = min(image.width / width, image.height / height)
            crop_width, crop_height = round(width * scale), round(height * scale)
            left, top = (image.width - crop_width) // 2, (image.height - crop_height) // 2
            box = (left, top, left + crop_width, top + crop_height)
            cropped = (
                '' if (crop_width, crop_height) == image.size else f'centre-cropped to {crop_height}x{crop_width} and '
            )
            note(prog, f'{cropped}resized {path} from {image.height}x{image.width} to {height}x{width}, the model size')
            image = image.resize((width, height), Image.Resampling.BICUBIC, box=box)
        arrays.append((np.asarray(image, dtype=np.float32) / 255).reshape(height, width, channels))
    return np.stack(arrays)


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

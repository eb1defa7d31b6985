"""mae-reconstruct CHECKPOINT IMAGE... --out grid.png: what the MAE makes of your images.

    mae-reconstruct mae.safetensors cat.jpg dog.jpg --out grid.png              # Flax
    mae-reconstruct mae.pt cat.jpg dog.jpg --out grid.png --backend torch --heads 8 --decoder_heads 16

One row per image: original | masked | reconstruction | reconstruction with the visible patches pasted. The
masking noise is drawn once with numpy from --seed and passed to either backend, so both draw the same picture.
"""

import argparse
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from mae_flax.cli.checkpoint import load_checkpoint, torch_model
from mae_flax.cli.common import UsageError, add_model_flags, given_flags, masking_noise, read_images, run_cli
from mae_flax.visualize import reconstruction_panels, save_grid

PROG = 'mae-reconstruct'


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,  # '--dim 8' must not pass for --dim_head
        description='Mask images, reconstruct them with an MAE checkpoint and save the grid as a PNG.',
        epilog=(
            'Images are read as RGB (or gray for 1-channel models) scaled to [0, 1] and resized to the model '
            'size (said on stderr). Exit codes: 0 written, 2 bad input.'
        ),
    )
    parser.add_argument('checkpoint', metavar='CHECKPOINT', help='torch layout (.pt/.pth/.safetensors) or Flax')
    parser.add_argument('images', metavar='IMAGE', nargs='+', help='image files (png, jpg, ...)')
    parser.add_argument('--out', required=True, help='the PNG to write')
    parser.add_argument('--backend', choices=('flax', 'torch'), default='flax', help='which model runs (default flax)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the masking noise (default 0)')
    parser.add_argument('--scale', type=int, default=1, help='enlarge the grid this many times (default 1)')
    add_model_flags(parser)
    return parser


def reconstruct(checkpoint, images, noise, backend):
    """(pred_pixel_values, masked_indices) as numpy for (b, h, w, c) images."""
    if backend == 'flax':
        # compiled as one program: eagerly, JAX compiles each operation on its own, slower on a CPU
        forward = nnx.jit(lambda model, img, noise: model(img, noise=noise, return_outputs=True))
        out = forward(checkpoint.model, jnp.asarray(images), jnp.asarray(noise))
        return np.asarray(out.pred_pixel_values), np.asarray(out.masked_indices)
    import torch

    with torch.no_grad():
        img = torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, 1)))  # (b, c, h, w)
        out = torch_model(checkpoint)(img, noise=torch.from_numpy(noise), return_outputs=True)
    return out.pred_pixel_values.numpy(), out.masked_indices.numpy()


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.suffix.lower() != '.png':
        raise UsageError(f'--out must be a .png file, got {out}')
    if args.scale < 1:
        raise UsageError(f'--scale must be at least 1, got {args.scale}')
    checkpoint = load_checkpoint(args.checkpoint, given_flags(args))
    config = checkpoint.config
    if config['model'] != 'MAE':
        raise UsageError(f'{args.checkpoint} is a ViT without an MAE decoder: it cannot reconstruct')
    images = read_images(args.images, config['vit']['image_size'], config['vit']['channels'], PROG)
    noise = masking_noise(args.seed, len(images), checkpoint.model.num_patches)

    pred, masked_indices = reconstruct(checkpoint, images, noise, args.backend)
    panels = reconstruction_panels(
        images, pred, masked_indices, config['vit']['patch_size'], norm_pix_loss=config['mae']['norm_pix_loss']
    )
    save_grid(panels, out, scale=args.scale)
    masking_ratio = config['mae']['masking_ratio']
    print(f'{out}: {len(images)} images, {masked_indices.shape[1]} of {noise.shape[1]} patches masked ', end='')
    print(f'(masking_ratio {masking_ratio}, seed {args.seed}, {args.backend})')
    return 0


def run(argv=None):
    run_cli(PROG, main, argv)


if __name__ == '__main__':
    run()

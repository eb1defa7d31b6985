"""mae-reconstruct CHECKPOINT IMAGE... --out grid.png: what the MAE makes of your images.

    mae-reconstruct runs/tiny cat.jpg dog.jpg --out grid.png                   # a mae-train workdir
    mae-reconstruct mae.safetensors cat.jpg dog.jpg --out grid.png              # Flax, or an export: no flags
    mae-reconstruct mae.pt cat.jpg dog.jpg --out grid.png --backend torch --heads 8 --decoder_heads 16

One row per image: original | masked | reconstruction | reconstruction with the visible patches pasted. A video
model takes video files instead (the middle clip of each, a frame every --frame_stride) and draws three strips of
frames per clip: original, masked, reconstruction with the visible tubes pasted. Images
are standardised with the model's pixel statistics (its model description's, as it was trained) and drawn back
in pixel colours. The masking noise is drawn once with numpy from --seed and passed to either backend, so both
draw the same picture. The printed loss is the model's own: the mean squared error over the masked patches, in
the standardised pixels the model sees (mae-train's eval loss is the same measure).
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from mae_core.errors import UsageError
from mae_flax import heldout
from mae_flax.cli.common import add_model_flags, flag, given_flags, make_parser, masking_noise, read_images, run_cli
from mae_flax.files import videos
from mae_flax.model_files import read_model, torch_model
from mae_flax.videomae import pictures
from mae_flax.visualize import reconstruction_panels, save_grid

PROG = 'mae-reconstruct'


def build_parser():
    parser = make_parser(
        PROG,
        'Mask images, reconstruct them with an MAE checkpoint and save the grid as a PNG.',
        'Images are read as RGB (or gray for 1-channel models), scaled to [0, 1], resized to the model size (said '
        "on stderr) and standardised with the model's pixel statistics. Exit codes: 0 written, 2 bad input.",
    )
    parser.add_argument(
        'checkpoint', metavar='CHECKPOINT', help='torch layout (.pt/.pth/.safetensors), Flax, or a workdir'
    )
    parser.add_argument('images', metavar='IMAGE', nargs='+', help='image files (png, jpg, ...)')
    parser.add_argument('--out', required=True, help='the PNG to write')
    parser.add_argument('--backend', choices=('flax', 'torch'), default='flax', help='which model runs (default flax)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the masking noise (default 0)')
    parser.add_argument(
        '--scale', type=int, help='enlarge the grid this many times (default: panels of at least 128 pixels)'
    )
    parser.add_argument(*flag('--step'), type=int, help='with a workdir: which checkpoint (default: the latest)')
    parser.add_argument(
        *flag('--frame_stride'), type=int, default=4, help="video models: frames between a clip's two (default 4)"
    )
    add_model_flags(parser)
    return parser


def reconstruct(loaded, images, noise, backend):
    """(loss, pred_pixel_values, masked_indices) as numpy for (b, h, w, c) standardised images."""
    if backend == 'flax':
        # compiled as one program: eagerly, JAX compiles each operation on its own, slower on a CPU
        forward = nnx.jit(lambda model, img, noise: model(img, noise=noise, return_outputs=True))
        out = forward(loaded.model, jnp.asarray(images), jnp.asarray(noise))
        return float(out.loss), np.asarray(out.pred_pixel_values), np.asarray(out.masked_indices)
    import torch

    with torch.no_grad():
        img = torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, -3)))  # (b, c, h, w) or (b, t, c, h, w)
        out = torch_model(loaded)(img, noise=torch.from_numpy(noise), return_outputs=True)
    return float(out.loss), out.pred_pixel_values.numpy(), out.masked_indices.numpy()


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f'--out {out} is a folder: name the .png file to write')
    if out.suffix.lower() != '.png':
        raise UsageError(f'--out must be a .png file, got {out}')
    for image in args.images:
        if out.exists() and Path(image).exists() and out.samefile(image):
            raise UsageError(f'--out {out} is one of the input images ({image}): write the grid to another file')
    if args.scale is not None and args.scale < 1:
        raise UsageError(f'--scale must be at least 1, got {args.scale}')
    loaded = read_model(args.checkpoint, given_flags(args), step=args.step)
    loaded.needs_decoder('mae-reconstruct')
    spec = loaded.spec
    if spec.mae is None:
        raise UsageError(f'{args.checkpoint} is an encoder without an MAE decoder: it cannot reconstruct')
    if spec.num_frames is not None:
        return reconstruct_clips(loaded, args, out)
    photos = read_images(args.images, spec.image_size, spec.channels, PROG)  # pixels in [0, 1]
    images = spec.normalize(photos)
    noise = masking_noise(args.seed, len(images), spec.num_patches)

    loss, pred, masked_indices = reconstruct(loaded, images, noise, args.backend)
    panels = reconstruction_panels(images, pred, masked_indices, spec.patch_size, norm_pix_loss=spec.norm_pix_loss)
    pixels = {name: spec.denormalize(panel) for name, panel in panels.items()}
    scale = args.scale or max(1, -(-128 // min(spec.image_size)))  # a size a person can look at
    save_grid(pixels, out, scale=scale)
    # the pasted panel is the original on the visible patches: its squared error is all on the masked ones
    masked_fraction = masked_indices.shape[1] / noise.shape[1]
    pixel_mse = float(np.mean((pixels['reconstruction_pasted'] - pixels['original']) ** 2)) / masked_fraction
    print(f'{out}: {len(images)} images, {masked_indices.shape[1]} of {noise.shape[1]} patches masked ', end='')
    print(f'(masking_ratio {spec.masking_ratio}, seed {args.seed}, {args.backend})')
    print(f"loss {loss:.4f} (the model's, in its standardised pixels); pixel MSE {pixel_mse:.4f} on the masked patches")
    figures = heldout.figures(photos, heldout.pixel_predictions(pred, spec), masked_indices, spec.patch_size)
    model = figures['heldout_ratio']
    said = f'{model:.2f}' if model is not None else 'not available (a norm_pix_loss model predicts no pixels)'
    print(
        f"masked-patch error / the mean colour fill's: {said}; a blur of the visible patches: "
        f'{figures["blur_ratio"]:.2f} (lower is better)'
    )
    return 0


def reconstruct_clips(loaded, args, out):
    """mae-reconstruct for a video model: the middle clip of each video file, drawn as frame strips."""
    spec = loaded.spec
    if args.frame_stride < 1:
        raise UsageError(f'--frame_stride must be at least 1, got {args.frame_stride}')
    clips = np.stack(
        [
            videos.read_clip(path, spec.num_frames, args.frame_stride, spec.image_size, spec.channels)
            for path in args.images
        ]
    )
    clips = spec.normalize(clips)
    noise = masking_noise(args.seed, len(clips), spec.num_patches)  # one spatial mask per clip, over every tubelet
    loss, pred, masked_indices = reconstruct(loaded, clips, noise, args.backend)
    pictures.save_strips(out, clips, pred, masked_indices, spec, scale=args.scale)
    panels = pictures.clip_panels(clips, pred, masked_indices, spec)
    masked_fraction = masked_indices.shape[1] / (noise.shape[1] * spec.num_frames // spec.encoder['tubelet_size'])
    pixel_mse = float(np.mean((panels['reconstruction_pasted'] - panels['original']) ** 2)) / masked_fraction
    print(f'{out}: {len(clips)} clips of {spec.num_frames} frames (every {args.frame_stride}), ', end='')
    print(f'{masked_indices.shape[1]} of {round(masked_indices.shape[1] / masked_fraction)} tubes masked ', end='')
    print(f'(masking_ratio {spec.masking_ratio}, seed {args.seed}, {args.backend})')
    print(f"loss {loss:.4f} (the model's); pixel MSE {pixel_mse:.4f} on the masked tubes")
    return 0


def run(argv=None):
    run_cli(PROG, main, argv)


if __name__ == '__main__':
    run()

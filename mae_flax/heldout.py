"""How well an MAE fills in photographs it never saw, against two fills that need no training; numpy only, so the
training loop, mae-reconstruct and the benchmarks measure it the same way from either backend's outputs.

The figure: the squared error of the masked patches as drawn (the pasted reconstruction: the prediction on the
masked patches, the image on the visible ones), over the error of filling every masked patch with the image's mean
colour; lower is better, 0 a perfect reconstruction, 1 no better than the flat colour. Beside it, the same ratio
for a fill that needs no training (`blur_fill`): each masked patch takes a Gaussian-weighted average (sigma 1.5
patches) of the visible patches' mean colours. A model's figure below the blur's is a model that learned something
a blur does not know.

Predictions are scored in pixels in [0, 1] (denormalised with the model's pixel statistics, clipped as drawn). A
norm_pix_loss model predicts each patch standardised, and its drawn reconstruction takes the masked patch's own
mean and spread from the original, which no fill could know: it has no figure here (`pixel_predictions` says so).

The held-out set: 4 crops of each held-out photograph (mae_flax.photos.HELDOUT, never trained on), each under 3
masks, at the model's image size. The crops are squares of 100% (the largest centred square: the photograph as
mae-reconstruct shows it), 25%, 6% and 1.5% of the photograph's shorter side squared, the smaller ones at fixed
places; the masks are fixed noise (the model's masking convention picks the masked patches from it).
"""

import numpy as np
from einops import rearrange
from PIL import Image

from mae_core.fields import pair
from mae_flax import photos
from mae_flax.patches import patchify

CROP_FRACTIONS = (1.0, 0.25, 0.06, 0.015)  # of the shorter side squared: the whole photograph down to details
MASKS_PER_CROP = 3
BLUR_SIGMA = 1.5  # in patches
SEED = 0


def crops(image_size, channels=3, names=photos.HELDOUT, fractions=CROP_FRACTIONS, seed=SEED):
    """uint8 (len(names) * len(fractions), h, w, c): square crops of each photograph at full resolution, resized
    (bicubic, antialiased) to `image_size`; the same pixels on every call."""
    height, width = pair(image_size)
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        with Image.open(photos.path(name)) as image:
            image = image.convert('L' if channels == 1 else 'RGB')  # the held-out photographs are 8-bit L or RGB
        short = min(image.size)
        for fraction in fractions:
            side = max(1, round(short * fraction**0.5))
            if fraction == 1.0:
                left, top = (image.width - side) // 2, (image.height - side) // 2
            else:
                left, top = int(rng.integers(0, image.width - side + 1)), int(rng.integers(0, image.height - side + 1))
            crop = image.resize((width, height), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
            array = np.asarray(crop, dtype=np.uint8)
            out.append(array[..., None] if array.ndim == 2 else array)
    return np.stack(out)


def masked_batch(images, num_patches, masks=MASKS_PER_CROP, seed=SEED):
    """(pixels float32 (b * masks, h, w, c) in [0, 1], masking noise float32 (b * masks, num_patches)): each image
    `masks` times, with fixed noise."""
    pixels = np.repeat(np.asarray(images, np.float32) / 255, masks, axis=0)
    noise = np.random.default_rng(seed).random((len(pixels), num_patches), dtype=np.float32)
    return pixels, noise


def pixel_predictions(pred, spec):
    """A model's predictions of the masked patches (b, m, p1 p2 c), in the standardised pixels it sees -> pixels;
    None for a norm_pix_loss model (its predictions are per-patch standardised: no pixels without the target's own
    mean and spread)."""
    if spec.norm_pix_loss:
        return None
    pred = rearrange(np.asarray(pred, np.float32), 'b m (pp c) -> b m pp c', c=spec.channels)
    pixels = pred * np.float32(spec.pixel_std) + np.float32(spec.pixel_mean)
    return rearrange(pixels, 'b m pp c -> b m (pp c)')


def _masked_patches(pixels, masked_indices, patch_size):
    patches = patchify(np.asarray(pixels, np.float32), patch_size)  # (b, n, p1 p2 c)
    return patches[np.arange(len(patches))[:, None], np.asarray(masked_indices)]  # (b, m, p1 p2 c)


def _flat(colours, patch_dim):
    """(b, m, c) colours -> (b, m, p1 p2 c) patches of one colour each."""
    channels = colours.shape[-1]
    return np.tile(colours, (1, 1, patch_dim // channels))


def mean_colour_fill(pixels, masked_indices, patch_size):
    """(b, m, p1 p2 c): every masked patch the image's mean colour (of all its pixels: the figure's yardstick)."""
    pixels = np.asarray(pixels, np.float32)
    colours = pixels.mean(axis=(1, 2))[:, None, :]  # (b, 1, c)
    patch_dim = np.prod(pair(patch_size)) * pixels.shape[-1]
    return _flat(np.broadcast_to(colours, (len(pixels), np.shape(masked_indices)[1], pixels.shape[-1])), patch_dim)


def blur_fill(pixels, masked_indices, patch_size, sigma=BLUR_SIGMA):
    """(b, m, p1 p2 c): every masked patch one colour, the average of the visible patches' mean colours weighted by
    a Gaussian (`sigma` patches) of their distance to it; nothing of a masked patch is read."""
    pixels = np.asarray(pixels, np.float32)
    masked_indices = np.asarray(masked_indices)
    batch, height, width, channels = pixels.shape
    patch_height, patch_width = pair(patch_size)
    rows, columns = height // patch_height, width // patch_width
    patches = patchify(pixels, patch_size)  # (b, n, p1 p2 c)
    means = patches.reshape(batch, rows * columns, -1, channels).mean(axis=2)  # (b, n, c)
    visible = np.ones((batch, rows * columns), np.float32)
    visible[np.arange(batch)[:, None], masked_indices] = 0
    grid = np.stack(np.meshgrid(np.arange(rows), np.arange(columns), indexing='ij'), axis=-1).reshape(-1, 2)
    distance2 = ((grid[:, None, :] - grid[None, :, :]) ** 2).sum(-1)  # (n, n), in patches squared
    weights = np.exp(-distance2 / (2 * sigma**2)).astype(np.float32)
    total = np.einsum('ij,bj->bi', weights, visible)  # (b, n)
    blurred = np.einsum('ij,bj,bjc->bic', weights, visible, means) / total[..., None]  # (b, n, c)
    colours = blurred[np.arange(batch)[:, None], masked_indices]  # (b, m, c)
    return _flat(colours, patches.shape[-1])


def squared_error(pixels, fill, masked_indices, patch_size):
    """Summed over the masked patches of all images: the pasted reconstruction's squared error (its visible
    patches are the image's own), the fill clipped to [0, 1] as it is drawn."""
    target = _masked_patches(pixels, masked_indices, patch_size)
    return float(np.sum((np.clip(fill, 0, 1) - target) ** 2, dtype=np.float64))


def ratio(pixels, fill, masked_indices, patch_size):
    """The figure of `fill` (b, m, p1 p2 c) in pixels: its masked-patch error over the mean-colour fill's."""
    yardstick = squared_error(pixels, mean_colour_fill(pixels, masked_indices, patch_size), masked_indices, patch_size)
    return squared_error(pixels, fill, masked_indices, patch_size) / max(yardstick, 1e-12)


def figures(pixels, pred_pixels, masked_indices, patch_size):
    """{'heldout_ratio': the prediction's figure (None without pixel predictions), 'blur_ratio': the training-free
    blur's on the same images and masks}."""
    blur = ratio(pixels, blur_fill(pixels, masked_indices, patch_size), masked_indices, patch_size)
    model = None if pred_pixels is None else ratio(pixels, pred_pixels, masked_indices, patch_size)
    return dict(heldout_ratio=model, blur_ratio=blur)


def evaluate(forward, spec, images=None):
    """The held-out figures of a model: `forward(standardised images, noise)` -> (pred (b, m, p1 p2 c) in the
    model's standardised pixels, masked_indices (b, m)), as numpy or jax arrays; `images`: uint8 crops (default:
    the held-out set at the model's size)."""
    if images is None:
        images = crops(spec.image_size, spec.channels)
    pixels, noise = masked_batch(images, spec.num_patches)
    pred, masked_indices = forward(spec.normalize(pixels), noise)
    return figures(pixels, pixel_predictions(pred, spec), np.asarray(masked_indices), spec.patch_size)

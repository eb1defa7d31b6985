"""The picture MAE users expect: original | masked | reconstruction | reconstruction with visible patches pasted.

numpy only, so both backends (and the training loop) draw the same grid from their outputs.
"""

import numpy as np
from einops import rearrange
from PIL import Image

from mae_core.fields import pair
from mae_flax.files import atomic_path
from mae_flax.patches import patchify, unpatchify

PANELS = ('original', 'masked', 'reconstruction', 'reconstruction_pasted')


def reconstruction_panels(images, pred_pixel_values, masked_indices, patch_size, norm_pix_loss=False):
    """images (b, h, w, c) float; pred (b, m, patch_dim) for the masked patches; -> {panel: (b, h, w, c)}.

    With norm_pix_loss the predictions are per-patch standardised: each is mapped back with its target patch's
    mean and standard deviation, as facebookresearch/mae's visualisation. Patches with no pixels (masked, or not
    predicted) are NaN: drawn mid gray.
    """
    images = np.asarray(images, dtype=np.float32)
    pred = np.asarray(pred_pixel_values, dtype=np.float32)
    masked_indices = np.asarray(masked_indices)
    patches = patchify(images, patch_size)  # (b, n, patch_dim)
    rows = np.arange(len(images))[:, None]
    if norm_pix_loss:
        target = patches[rows, masked_indices]
        pred = pred * np.sqrt(target.var(axis=-1, ddof=1, keepdims=True) + 1e-6) + target.mean(axis=-1, keepdims=True)

    # NaN: no pixel there (masked, or nothing predicted), drawn neutral mid gray by to_rgb8
    masked, reconstruction, pasted = patches.copy(), np.full_like(patches, np.nan), patches.copy()
    masked[rows, masked_indices] = np.nan
    reconstruction[rows, masked_indices] = pred
    pasted[rows, masked_indices] = pred
    image_size, channels = images.shape[1:3], images.shape[-1]
    return {
        'original': images,
        'masked': np.asarray(unpatchify(masked, image_size, pair(patch_size), channels)),
        'reconstruction': np.asarray(unpatchify(reconstruction, image_size, pair(patch_size), channels)),
        'reconstruction_pasted': np.asarray(unpatchify(pasted, image_size, pair(patch_size), channels)),
    }


def grid_image(panels, scale=1):
    """{panel: (b, h, w, c)} -> uint8 (b * h, 4 * w, 3): one row per image, one column per panel.

    Each row is scaled to [0, 255] by its original's range, so predictions are drawn in the original's colours.
    """
    columns = scaled_by_first([panels[name] for name in PANELS])
    return to_rgb8(rearrange(np.stack(columns), 'k b h w c -> (b h) (k w) c'), scale)


def scaled_by_first(panels):
    """Panels (b, ...) -> the same in [0, 1], each item scaled by the first panel's range (its original's), so
    that predictions are drawn in the original's colours."""
    panels = [np.asarray(panel, dtype=np.float32) for panel in panels]
    axes = tuple(range(1, panels[0].ndim))
    low, high = panels[0].min(axis=axes, keepdims=True), panels[0].max(axis=axes, keepdims=True)
    return [np.clip((panel - low) / np.maximum(high - low, 1e-12), 0, 1) for panel in panels]


def to_rgb8(image, scale=1):
    """(h, w, c) in [0, 1], c 1 or 3 -> uint8 RGB, each pixel drawn `scale` x `scale`; NaN (no pixel) mid gray."""
    image = np.where(np.isnan(image), np.float32(0.5), image)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    image = (image * 255).round().astype(np.uint8)
    if scale > 1:
        image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    return image


def save_grid(panels, path, scale=1):
    """Writes the grid as a PNG, atomically; returns the path."""
    with atomic_path(path) as tmp:
        Image.fromarray(grid_image(panels, scale)).save(tmp, format='PNG')
    return path

"""Images <-> patch vectors: (b, h, w, c) <-> (b, n, (p1 p2 c)), the same patch layout as mae_torch."""

import jax
import numpy as np
from einops import rearrange

from mae_core.fields import pair


def check_batch(batch, expected, axes, noun):
    """Raises unless `batch` is a non-empty floating jax or numpy (b, *expected) array: `axes` names the expected
    axes, `noun` what an item is ('image', 'video')."""
    if not isinstance(batch, jax.Array | np.ndarray):
        raise TypeError(f'expected a jax or numpy array {noun} batch, got {type(batch).__name__}')
    if not np.issubdtype(batch.dtype, np.floating):
        raise TypeError(
            f'expected floating point {noun}s (pixels standardised as the model was trained), got {batch.dtype}'
        )
    if batch.ndim != 1 + len(expected) or tuple(batch.shape[1:]) != tuple(expected):
        raise ValueError(
            f'expected {noun}s of shape (batch, {", ".join(map(str, expected))}) (batch, {axes}), '
            f'got {tuple(batch.shape)}'
        )
    if batch.shape[0] == 0:
        raise ValueError(f'expected at least one {noun}, got an empty batch')


def check_image(img, *, channels, image_size):
    """Raises unless `img` is a non-empty floating (b, height, width, channels) batch of the expected size."""
    check_batch(img, (*pair(image_size), channels), 'height, width, channels', 'image')


def patchify(img, patch_size):
    """(b, h, w, c) -> (b, (h/p1 * w/p2), (p1 p2 c))."""
    patch_height, patch_width = pair(patch_size)
    if img.ndim != 4 or img.shape[1] % patch_height or img.shape[2] % patch_width:
        raise ValueError(
            f'expected (batch, height, width, channels) images with height divisible by {patch_height} '
            f'and width by {patch_width}, got shape {tuple(img.shape)}'
        )
    return rearrange(img, 'b (h p1) (w p2) c -> b (h w) (p1 p2 c)', p1=patch_height, p2=patch_width)


def unpatchify(patches, image_size, patch_size, channels=3):
    """(b, n, (p1 p2 c)) -> (b, h, w, c); the inverse of `patchify`."""
    (image_height, image_width), (patch_height, patch_width) = pair(image_size), pair(patch_size)
    num_patches = (image_height // patch_height) * (image_width // patch_width)
    expected = (num_patches, patch_height * patch_width * channels)
    if patches.ndim != 3 or tuple(patches.shape[1:]) != expected:
        raise ValueError(f'expected patches of shape (batch, {expected[0]}, {expected[1]}), got {tuple(patches.shape)}')
    return rearrange(
        patches,
        'b (h w) (p1 p2 c) -> b (h p1) (w p2) c',
        h=image_height // patch_height,
        p1=patch_height,
        p2=patch_width,
    )

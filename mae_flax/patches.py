"""Images <-> patch vectors: (b, h, w, c) <-> (b, n, (p1 p2 c)), the same patch layout as mae_torch."""

import jax
import numpy as np
from einops import rearrange

from mae_core.fields import pair


def check_image(img, *, channels, image_size):
    """Raises ValueError unless `img` is a (b, height, width, channels) batch of the expected size."""
    if not isinstance(img, jax.Array | np.ndarray):
        raise TypeError(f'expected a jax or numpy array image batch, got {type(img).__name__}')
    if not np.issubdtype(img.dtype, np.floating):
        raise TypeError(
            f'expected floating point images (pixels standardised as the model was trained), got {img.dtype}'
        )
    expected = (*pair(image_size), channels)
    if img.ndim != 4 or tuple(img.shape[1:]) != expected:
        raise ValueError(
            f'expected images of shape (batch, {expected[0]}, {expected[1]}, {expected[2]}) '
            f'(batch, height, width, channels), got {tuple(img.shape)}'
        )
    if img.shape[0] == 0:
        raise ValueError('expected at least one image, got an empty batch')


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

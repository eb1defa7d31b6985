"""Images <-> patch vectors, in vit-pytorch's layout: (b, c, h, w) <-> (b, n, (p1 p2 c))."""

import torch
from einops import rearrange
from torch import nn

from mae_core.fields import pair


def check_image(img, *, channels, image_size):
    """Raises ValueError unless `img` is a (b, channels, height, width) batch of the expected size."""
    if not isinstance(img, torch.Tensor):
        raise TypeError(f'expected a torch.Tensor image batch, got {type(img).__name__}')
    if not img.dtype.is_floating_point:
        raise TypeError(
            f'expected floating point images (pixels standardised as the model was trained), got {img.dtype}'
        )
    expected = (channels, *pair(image_size))
    if img.ndim != 4 or tuple(img.shape[1:]) != expected:
        raise ValueError(
            f'expected images of shape (batch, {expected[0]}, {expected[1]}, {expected[2]}) '
            f'(batch, channels, height, width), got {tuple(img.shape)}'
        )
    if img.shape[0] == 0:
        raise ValueError('expected at least one image, got an empty batch')


def patchify(img, patch_size):
    """(b, c, h, w) -> (b, (h/p1 * w/p2), (p1 p2 c))."""
    patch_height, patch_width = pair(patch_size)
    if img.ndim != 4 or img.shape[-2] % patch_height or img.shape[-1] % patch_width:
        raise ValueError(
            f'expected (batch, channels, height, width) images with height divisible by {patch_height} '
            f'and width by {patch_width}, got shape {tuple(img.shape)}'
        )
    return rearrange(img, 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)', p1=patch_height, p2=patch_width)


def unpatchify(patches, image_size, patch_size, channels=3):
    """(b, n, (p1 p2 c)) -> (b, c, h, w); the inverse of `patchify`."""
    (image_height, image_width), (patch_height, patch_width) = pair(image_size), pair(patch_size)
    num_patches = (image_height // patch_height) * (image_width // patch_width)
    expected = (num_patches, patch_height * patch_width * channels)
    if patches.ndim != 3 or tuple(patches.shape[1:]) != expected:
        raise ValueError(f'expected patches of shape (batch, {expected[0]}, {expected[1]}), got {tuple(patches.shape)}')
    return rearrange(
        patches,
        'b (h w) (p1 p2 c) -> b c (h p1) (w p2)',
        h=image_height // patch_height,
        p1=patch_height,
        p2=patch_width,
    )


class Patchify(nn.Module):
    """`patchify` as a module: the first stage of `ViT.to_patch_embedding`, as vit-pytorch's `Rearrange`."""

    def __init__(self, patch_size):
        super().__init__()
        self.patch_size = pair(patch_size)

    def forward(self, img):
        return patchify(img, self.patch_size)

"""Images <-> patch vectors, in vit-pytorch's layout: (b, c, h, w) <-> (b, n, (p1 p2 c))."""

import torch
from einops import rearrange
from torch import nn

from mae_core.fields import pair


def check_batch(batch, expected, axes, noun):
    """Raises unless `batch` is a non-empty floating (b, *expected) torch.Tensor: `axes` names the expected axes,
    `noun` what an item is ('image', 'video')."""
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f'expected a torch.Tensor {noun} batch, got {type(batch).__name__}')
    if not batch.dtype.is_floating_point:
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
    """Raises unless `img` is a non-empty floating (b, channels, height, width) batch of the expected size."""
    check_batch(img, (channels, *pair(image_size)), 'channels, height, width', 'image')


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

"""Augmentations of the training stream: random-resized crop and horizontal flip (facebookresearch/mae's), and
for little data, colour augmentations (config.data.color_permute, color_invert): off (0) in the ImageNet recipes,
and then not in the pipeline at all, so the stream is bitwise what it was without them."""

import math

import grain
import numpy as np
from PIL import Image

from mae_core.fields import pair


class RandomResizedCropFlip(grain.transforms.RandomMap):
    """torchvision's RandomResizedCrop (bicubic) and RandomHorizontalFlip, as facebookresearch/mae: an index of
    `source` -> uint8 (h, w, c). With `draft`, JPEGs are decoded reduced where the crop allows (see `decode`)."""

    def __init__(self, source, image_size, scale, flip, draft=False, ratio=(3 / 4, 4 / 3)):
        self.source = source
        self.height, self.width = pair(image_size)
        self.scale, self.flip, self.draft = tuple(scale), flip, draft
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def _box(self, width, height, rng):
        area = width * height
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*self.log_ratio))
            crop_width = round(math.sqrt(target_area * aspect))
            crop_height = round(math.sqrt(target_area / aspect))
            if 0 < crop_width <= width and 0 < crop_height <= height:
                left = int(rng.integers(0, width - crop_width + 1))
                top = int(rng.integers(0, height - crop_height + 1))
                return left, top, left + crop_width, top + crop_height
        side = min(width, height)  # torchvision's fallback: the largest centred square
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side

    def random_map(self, element, rng):
        start = rng.bit_generator.state

        def choose_box(width, height):
            rng.bit_generator.state = start  # an unreadable item's draws are undone: its replacement gets them
            return self._box(width, height, rng)

        draft_size = (self.height, self.width) if self.draft else None
        image, box = self.source.read(int(element), choose_box, draft_size)
        image = image.resize((self.width, self.height), Image.Resampling.BICUBIC, box=box)
        if self.flip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = np.asarray(image, dtype=np.uint8)
        return image[..., None] if image.ndim == 2 else image  # (h, w, c)


COLOR_FIELDS = ('color_permute', 'color_invert')


def color_enabled(data_config):
    return any(data_config.get(name, 0.0) > 0 for name in COLOR_FIELDS)


class ColorAugment(grain.transforms.RandomMap):
    """uint8 (h, w, c) -> the same crop with its colour channels shuffled (a uniformly drawn permutation, the
    identity included) with probability `permute`, and inverted (255 - x) with probability `invert`; one-channel
    crops are only inverted. A few photographs are memorised within a few hundred steps; under these each becomes
    twelve pictures of the same shapes in other colours, and what is left to learn is how shapes continue, not
    which colour a place of a given photograph has."""

    def __init__(self, permute=0.0, invert=0.0):
        self.permute, self.invert = permute, invert

    def random_map(self, element, rng):
        image = element
        if image.shape[-1] > 1 and rng.random() < self.permute:
            image = image[..., rng.permutation(image.shape[-1])]
        if rng.random() < self.invert:
            image = 255 - image
        return np.ascontiguousarray(image, dtype=np.uint8)

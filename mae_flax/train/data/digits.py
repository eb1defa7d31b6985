"""scikit-learn's handwritten digits (1,797 8x8 gray images, 10 classes, shipped with the package: no download),
split into train and validation by a fixed seed: the embedded data of the digits recipes (mae-train's images,
mae-finetune's and mae-linprobe's labelled splits)."""

import numpy as np

from mae_core.errors import UsageError

NAME = 'digits'
SPLIT_SEED = 0  # the fixed split of the embedded digits (and of a .npz without val_*)
VAL_FRACTION = 0.2  # its default: 1,438 training and 359 validation images


def split(count, val_fraction, seed=SPLIT_SEED):
    """(train indices, val indices) of `count` items: a fixed permutation, its first val_fraction for validation."""
    order = np.random.default_rng(seed).permutation(count)
    val = max(1, round(count * val_fraction))
    if val >= count:
        raise UsageError(f'data.val_fraction {val_fraction} leaves no training images of {count}')
    return np.sort(order[val:]), np.sort(order[:val])


def load(channels, val_fraction=VAL_FRACTION):
    """((train images, train labels), (val images, val labels)): uint8 (n, 8, 8, 1), values 0..16 scaled to
    0..255, and int32 labels."""
    if channels != 1:
        raise UsageError(f'the digits are gray images: the model must take 1 channel, it takes {channels}')
    from sklearn.datasets import load_digits  # a few ms; scikit-learn comes with the train extra

    loaded = load_digits()
    images = np.round(loaded.images / 16 * 255).astype(np.uint8)[..., None]  # (1797, 8, 8, 1)
    labels = loaded.target.astype(np.int32)
    train, val = split(len(images), val_fraction)
    return (images[train], labels[train]), (images[val], labels[val])

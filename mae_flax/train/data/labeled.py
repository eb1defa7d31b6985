"""Labelled images for fine-tuning and linear probing (mae-finetune, mae-linprobe): a train and a validation split.

Sources (`config.data.source`):
- 'digits': scikit-learn's handwritten digits (1,797 8x8 gray images, 10 classes, shipped with the package: no
  download), split into train and validation by a fixed seed (`data.val_fraction`);
- a folder in ImageFolder layout: `train/<class>/*.jpg` and `val/<class>/*.jpg` (classes: the sorted names of
  train's sub-folders; val's must be the same);
- a `.npz` with `images` (n, h, w, c) and `labels` (n,), and either `val_images` / `val_labels` or a split by
  `data.val_fraction`.

The training stream is mae-train's (grain, deterministic per (seed, element), sharded by process, checkpointable):
random-resized-crop and flip of each image, with its label. Validation is every image once, resized (shorter side
to size / `data.eval_crop_fraction`, bicubic) and centre-cropped, as facebookresearch/mae evaluates. A video model's
labelled clips are labeled_video's, which shares `Labeled`, `Split` and the padded validation batches.
"""

import dataclasses
import os
from pathlib import Path

import grain
import numpy as np
from PIL import Image

from mae_core.errors import UsageError
from mae_core.fields import pair
from mae_flax.train.data import digits as embedded_digits
from mae_flax.train.data import pipeline, sources
from mae_flax.train.data.augment import RandomResizedCropFlip

DIGITS, DIGITS_VAL_FRACTION = embedded_digits.NAME, embedded_digits.VAL_FRACTION


@dataclasses.dataclass
class Split:
    images: object  # a random-access source of PIL images (mae_flax.train.data.sources), or of clips (labeled_video)
    labels: np.ndarray  # (n,) int32


@dataclasses.dataclass
class Labeled:
    train: Split
    val: Split
    classes: tuple  # class names, label k is classes[k]

    @property
    def num_classes(self):
        return len(self.classes)


def _check_labels(labels, name, num_classes=None):
    labels = np.asarray(labels)
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.bool_)):
        raise UsageError(f'{name}: expected integer class labels of shape (n,), got {labels.dtype} {labels.shape}')
    if labels.size and (labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes)):
        allowed = f'0..{num_classes - 1}' if num_classes is not None else '>= 0'
        raise UsageError(f'{name}: labels must be in {allowed}, found {labels.min()}..{labels.max()}')
    return labels.astype(np.int32)


def _to_uint8(images, name, channels):
    images = np.asarray(images)
    if images.ndim == 3 and channels == 1:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] != channels or not len(images):
        raise UsageError(f'{name}: expected images (n, h, w, {channels}) with n > 0, got shape {images.shape}')
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating) or not np.isfinite(images).all() or images.min() < 0:
        raise UsageError(f'{name}: expected uint8 images or floats in [0, 1], got {images.dtype}')
    if images.max() > 1:
        raise UsageError(f'{name}: float images must be in [0, 1], found values up to {images.max():.4g}')
    return np.round(images * 255).astype(np.uint8)


def digits(channels, val_fraction):
    """scikit-learn's digits (mae_flax.train.data.digits) with their labels."""
    (train, train_labels), (val, val_labels) = embedded_digits.load(channels, val_fraction)
    return Labeled(
        Split(sources.ArrayImages(train), train_labels),
        Split(sources.ArrayImages(val), val_labels),
        tuple(str(k) for k in range(10)),
    )


def npz(path, channels, val_fraction):
    path = Path(path)
    if not path.is_file():
        raise UsageError(f'data source {path}: no such file')
    try:
        with np.load(path, allow_pickle=False) as archive:  # closed here: every array is read now
            arrays = {name: archive[name] for name in archive.files}
        names = set(arrays)
    except (ValueError, OSError, EOFError) as error:
        raise UsageError(f'data source {path} is not a .npz file ({type(error).__name__})') from None
    if not {'images', 'labels'} <= names:
        raise UsageError(f"{path} holds {sorted(names)}: expected 'images' and 'labels' (and optionally val_*)")
    images, labels = _to_uint8(arrays['images'], f'{path} images', channels), arrays['labels']
    labels = _check_labels(labels, f'{path} labels')
    if len(labels) != len(images):
        raise UsageError(f'{path}: {len(images)} images but {len(labels)} labels')
    if {'val_images', 'val_labels'} <= names:
        val_images = _to_uint8(arrays['val_images'], f'{path} val_images', channels)
        val_labels = _check_labels(arrays['val_labels'], f'{path} val_labels')
        if len(val_labels) != len(val_images):
            raise UsageError(f'{path}: {len(val_images)} val_images but {len(val_labels)} val_labels')
    else:
        train, val = embedded_digits.split(len(images), val_fraction)
        images, labels, val_images, val_labels = images[train], labels[train], images[val], labels[val]
    num_classes = int(max(labels.max(), val_labels.max())) + 1
    return Labeled(
        Split(sources.ArrayImages(images), labels),
        Split(sources.ArrayImages(val_images), val_labels),
        tuple(str(k) for k in range(num_classes)),
    )


class ClassFolder(sources.FolderSource):
    """The images of one split of an ImageFolder layout, each labelled by its top sub-folder; a validation split's
    warnings say an unreadable image is left out (`val_batches`)."""

    def __init__(self, folder, classes, channels, leave_out=False):
        self.leave_out = leave_out
        super().__init__(folder, channels)
        self.labels = class_labels(folder, self.files, classes, 'image')


def class_labels(folder, files, classes, noun):
    """(n,) int32: the class of each of `files` (paths under `folder`), the name of its top sub-folder; one line for a
    file outside a class folder or in a folder that is not one of `classes` (train/'s). `noun`: 'image' or 'video'."""
    index = {name: k for k, name in enumerate(classes)}
    stray = [name for name in files if len(Path(name).parts) == 1]
    if stray:
        raise UsageError(f'{folder}/{stray[0]} is not in a class folder: expected {folder}/<class>/<{noun}>')
    unknown = sorted({Path(name).parts[0] for name in files} - set(index))
    if unknown:
        raise UsageError(f'{folder}/{unknown[0]} is not a class of train/ ({", ".join(classes)})')
    return np.array([index[Path(name).parts[0]] for name in files], np.int32)


def class_names(folder, has_items, noun):
    """The sorted names of `folder`'s sub-folders, each holding at least one item (`has_items(sub-folder)`); one
    line otherwise. `noun`: 'image' or 'video'."""
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith('.'))
    if not classes:
        raise UsageError(f'{folder} has no class folders: expected {folder}/<class>/<{noun}>')
    for name in classes:
        if not has_items(folder / name):
            raise UsageError(f'class {name!r} has no {noun}s in {folder / name}: every class needs at least one')
    return tuple(classes)


def image_folder(root, channels):
    root = Path(root)
    if not (root / 'train').is_dir() or not (root / 'val').is_dir():
        raise UsageError(f'{root}: expected an ImageFolder layout, {root}/train/<class>/* and {root}/val/<class>/*')
    classes = class_names(root / 'train', sources.image_index, 'image')
    train = ClassFolder(root / 'train', classes, channels)
    val = ClassFolder(root / 'val', classes, channels, leave_out=True)
    return Labeled(Split(train, train.labels), Split(val, val.labels), classes)


def make_labeled(data_config, channels, num_classes=0):
    """The config's data.source -> Labeled; every label checked against `num_classes` (0: the data's own)."""
    source = data_config.source
    if source == DIGITS:
        labeled = digits(channels, data_config.val_fraction)
    elif str(source).endswith('.npz'):
        labeled = npz(source, channels, data_config.val_fraction)
    elif Path(source).is_dir():
        labeled = image_folder(source, channels)
    else:
        raise UsageError(
            f"data source {source!r}: expected 'digits', a .npz with images and labels, or an ImageFolder "
            '(train/<class>/*, val/<class>/*)'
        )
    return with_num_classes(labeled, source, num_classes)


def with_num_classes(labeled, source, num_classes):
    """`labeled` with every label checked against `num_classes` (0: the data's own) and its class names padded to
    that many."""
    if num_classes:
        for name, split in (('train', labeled.train), ('val', labeled.val)):
            _check_labels(split.labels, f'{source} ({name} labels) with config.num_classes={num_classes}', num_classes)
        labeled.classes = labeled.classes + tuple(str(k) for k in range(len(labeled.classes), num_classes))
    return labeled


class LabeledCrop(RandomResizedCropFlip):
    """An index -> {'image': its random-resized crop, flipped or not, 'label': its class}."""

    def __init__(self, split, image_size, scale, flip, draft=False):
        super().__init__(split.images, image_size, scale, flip, draft)
        self.labels = split.labels

    def random_map(self, element, rng):
        return {'image': super().random_map(element, rng), 'label': self.labels[int(element)]}


def train_iterator(split, data_config, image_size, seed, global_batch, process_index, process_count):
    """This process's rows of each global batch, {'image': uint8 (b, h, w, c), 'label': int32 (b,)}: mae-train's
    stream (data.train_iterator) with labels."""
    crop = LabeledCrop(split, image_size, data_config.crop_scale, data_config.flip, data_config.draft)
    stream = grain.MapDataset.range(len(split.labels)).seed(seed).shuffle().repeat(None).random_map(crop)
    return pipeline.iterate(stream, data_config, global_batch, process_index, process_count, len(split.labels))


def center_crop(image, image_size, crop_fraction):
    """facebookresearch/mae's evaluation transform: the shorter side resized to size / crop_fraction (bicubic), then
    the centre crop of the model's size."""
    height, width = pair(image_size)
    scale = max(height, width) / crop_fraction / min(image.width, image.height)
    resized = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    if resized != image.size:
        image = image.resize(resized, Image.Resampling.BICUBIC)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    array = np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def val_batches(split, image_size, channels, crop_fraction, global_batch, process_index, process_count):
    """Every validation image once, in order, as this process's rows of global batches {'image', 'label',
    'valid'}: the last batch is padded (valid 0) to the full size. An image that cannot be decoded is left out of the
    count (its row valid 0, named in a warning once), never replaced by another image under its label."""

    def read(index):
        image = split.images.image_or_none(index)
        return None if image is None else center_crop(image, image_size, crop_fraction)

    shape = (*pair(image_size), channels)
    yield from padded_batches(split.labels, read, shape, global_batch, process_index, process_count)


def padded_batches(labels, read, shape, global_batch, process_index, process_count):
    """Item k of a validation split, `read(k)` (uint8 of `shape`, or None where it cannot be read), for every k in
    order, as this process's rows of global batches {'image', 'label', 'valid'}: the last batch padded with
    zeros (valid 0) to the full size, an unreadable item's row valid 0 (left out of the count, never replaced)."""
    local_batch = global_batch // process_count
    count = len(labels)
    padding = np.zeros(shape, np.uint8)

    def item(index):
        if index >= count:
            return {'image': padding, 'label': 0, 'valid': 0}
        pixels = read(index)
        if pixels is None:
            return {'image': padding, 'label': labels[index], 'valid': 0}
        return {'image': pixels, 'label': labels[index], 'valid': 1}

    padded = -(-count // global_batch) * global_batch
    rows = grain.MapDataset.range(padded).map(item).batch(local_batch)[process_index::process_count]
    options = grain.ReadOptions(num_threads=4, prefetch_buffer_size=4)
    yield from rows.to_iter_dataset(options)

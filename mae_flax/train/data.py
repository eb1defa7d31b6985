"""Input pipeline (grain): images -> uint8 crops (b, h, w, c), deterministic, sharded by process, checkpointable.

Element k of the global stream is the same crop on any number of processes: the source is shuffled per epoch
and cropped with a seed derived from (seed, k). Global batch i is elements [i * B, (i + 1) * B); process p of P
reads only its contiguous slice of it, so the global array built from the local batches is the same batch
whatever P is.
"""

import logging
import math
import warnings
from pathlib import Path

import grain
import numpy as np
import skimage
from PIL import Image, ImageOps

from mae_core.errors import UsageError
from mae_core.fields import pair

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
# real photographs that ship inside scikit-image: no download
DEFAULT_PHOTOS = (
    'astronaut.png',
    'coffee.png',
    'chelsea.png',
    'rocket.jpg',
    'hubble_deep_field.jpg',
    'ihc.png',
    'retina.jpg',
    'motorcycle_left.png',
)
DEFAULT_CROPS_PER_PHOTO = 256  # the default "epoch": this many random crops of each photo


SAMPLE = 64  # items of an array source checked at start-up, before anything compiles


def to_8bit(image, channels, name):
    """Any PIL image -> the 8-bit 'L' or 'RGB' picture it shows: EXIF orientation applied, 16- and 32-bit
    integer images scaled (not clipped to white), float images checked to be in [0, 1], transparency composited
    over white, palettes and CMYK converted. A ValueError names the file and what was found otherwise."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F'):
        array = np.asarray(image, dtype=np.float64)
        if image.mode == 'F':
            if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
                raise UsageError(f'{name}: a float image must hold values in [0, 1], found {_range(array)}')
            top = 1.0
        else:  # 16-bit PNGs and TIFFs open as 'I' or 'I;16'
            top = 65535.0 if image.mode.startswith('I;16') or array.max() > 255 else 255.0
            if array.min() < 0 or array.max() > 65535:
                raise UsageError(f'{name}: expected 8- or 16-bit pixel values, found {_range(array)}')
        image = Image.fromarray(np.round(array / top * 255).astype(np.uint8), 'L')
    if image.mode in ('P', 'PA') and ('transparency' in image.info or image.mode == 'PA'):
        image = image.convert('RGBA')
    if image.mode in ('RGBA', 'LA', 'La', 'RGBa'):
        white = Image.new('RGBA', image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert('RGBA'))
    return image.convert('L' if channels == 1 else 'RGB')


def _range(array):
    finite = array[np.isfinite(array)]
    bad = int(array.size - finite.size)
    span = f'{finite.min():.4g}..{finite.max():.4g}' if finite.size else 'no finite value'
    return span + (f' and {bad} NaN/Inf' if bad else '')


class PhotoSource:
    """The embedded default: scikit-image's photographs, decoded once and shrunk to a few times the crop size."""

    def __init__(self, image_size, channels):
        folder = Path(skimage.__file__).parent / 'data'
        self.images = []
        for name in DEFAULT_PHOTOS:
            with Image.open(folder / name) as image:
                image = to_8bit(image, channels, folder / name)
                # shortest side 4x the crop: crops stay sharp, resizing them stays cheap
                factor = min(1.0, 4 * max(pair(image_size)) / min(image.size))
                self.images.append(image.resize((round(image.width * factor), round(image.height * factor))))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index]


class FolderSource:
    """Every .jpg/.jpeg/.png under a folder (recursive), in sorted order. An unreadable file is skipped with a
    warning and replaced by the next readable one, so batches keep their size and the stream stays
    deterministic."""

    def __init__(self, folder, channels):
        folder = Path(folder)
        if not folder.is_dir():
            raise UsageError(f'data source {folder} is not a folder, a .npy/.npz file or "default"')
        self.paths = sorted(p for p in folder.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.paths:
            raise UsageError(
                f'no images in {folder}: expected {", ".join(IMAGE_SUFFIXES)} files (searched recursively)'
            )
        self.channels = channels
        self.skipped = set()
        for index in np.linspace(0, len(self.paths) - 1, min(SAMPLE, len(self.paths))).astype(int):
            self[int(index)]  # a sample decoded at start-up, before anything compiles

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        for offset in range(len(self.paths)):
            path = self.paths[(index + offset) % len(self.paths)]
            try:
                with Image.open(path) as image:
                    return to_8bit(image, self.channels, path)
            except UsageError:  # readable, but not what an image file may hold: no silent substitute
                raise
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                if path not in self.skipped:
                    self.skipped.add(path)
                    warnings.warn(
                        f'skipping unreadable image {path} ({len(self.skipped)} so far): {error}', stacklevel=2
                    )
        raise UsageError(f'none of the {len(self.paths)} images in {self.paths[0].parent} could be read')


class ArraySource:
    """Images from a .npy file or a .npz file (its 'images' array, else its only one): (n, h, w, c), uint8 or
    float in [0, 1]. Values outside what the dtype says (float outside [0, 1], NaN, Inf) are an error naming the
    file and the item: a sample is checked at start-up, every item as it is read."""

    def __init__(self, path, channels):
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f'data source {path}: no such file')
        try:
            arrays = np.load(self.path, mmap_mode='r' if self.path.suffix == '.npy' else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:  # a text file, pickled objects, a truncated array
            raise UsageError(f'data source {path} is not a numpy array file ({type(error).__name__})') from None
        if not isinstance(arrays, np.ndarray):
            names = list(arrays.keys())
            if 'images' not in names and len(names) != 1:
                raise UsageError(f"{path} holds arrays {names}: expected one named 'images', or a single array")
            arrays = arrays['images' if 'images' in names else names[0]]
        if arrays.ndim != 4 or arrays.shape[-1] != channels or len(arrays) == 0:
            raise UsageError(f'{path}: expected images (n, h, w, {channels}) with n > 0, got shape {arrays.shape}')
        if arrays.dtype != np.uint8 and not np.issubdtype(arrays.dtype, np.floating):
            raise UsageError(f'{path}: expected uint8 or float images in [0, 1], got {arrays.dtype}')
        self.arrays = arrays
        for index in np.linspace(0, len(arrays) - 1, min(SAMPLE, len(arrays))).astype(int):
            self._checked(index)

    def _checked(self, index):
        image = np.asarray(self.arrays[index])
        if image.dtype != np.uint8 and (not np.isfinite(image).all() or image.min() < 0 or image.max() > 1):
            raise UsageError(
                f'{self.path}: image {index} is float, so its values must be in [0, 1]; found {_range(image)} '
                '(uint8 arrays hold 0..255)'
            )
        return image

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, index):
        image = self._checked(index)
        if image.dtype != np.uint8:
            image = (image * 255).round().astype(np.uint8)
        return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


class RandomResizedCropFlip(grain.transforms.RandomMap):
    """torchvision's RandomResizedCrop (bicubic) and RandomHorizontalFlip, as facebookresearch/mae; PIL -> uint8."""

    def __init__(self, image_size, scale, flip, ratio=(3 / 4, 4 / 3)):
        self.height, self.width = pair(image_size)
        self.scale, self.flip = tuple(scale), flip
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
        box = self._box(element.width, element.height, rng)
        image = element.resize((self.width, self.height), Image.Resampling.BICUBIC, box=box)
        if self.flip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = np.asarray(image, dtype=np.uint8)
        return image[..., None] if image.ndim == 2 else image  # (h, w, c)


def make_source(source, image_size, channels):
    """The config's data.source -> a random-access source of PIL images. Fails here, before anything compiles."""
    if source is None:
        raise UsageError('no data: set --config.data.source to a folder of images, a .npy/.npz file or "default"')
    if source == 'default':
        return PhotoSource(image_size, channels)
    if str(source).endswith(('.npy', '.npz')):
        return ArraySource(source, channels)
    return FolderSource(source, channels)


def crops(source, data_config, image_size, seed):
    """The global, endless, per-epoch reshuffled stream of crops: element k depends only on (seed, k)."""
    dataset = grain.MapDataset.source(source)
    if isinstance(source, PhotoSource):
        dataset = dataset.repeat(DEFAULT_CROPS_PER_PHOTO)
    transform = RandomResizedCropFlip(image_size, data_config.crop_scale, data_config.flip)
    return dataset.seed(seed).shuffle().repeat(None).random_map(transform)


def train_iterator(source, data_config, image_size, seed, global_batch, process_index, process_count):
    """This process's part of each global batch, uint8 (global_batch / process_count, h, w, c), read ahead by
    threads; the iterator's state (get_state/set_state) goes into checkpoints."""
    if global_batch % process_count:
        raise UsageError(f'batch_size {global_batch} must be divisible by the number of processes {process_count}')
    local_batch = global_batch // process_count
    batches = crops(source, data_config, image_size, seed).batch(local_batch, drop_remainder=True)
    # global batch i is local batches [i * P, (i + 1) * P): process p takes the p-th of each group
    local = batches[process_index::process_count]
    options = grain.ReadOptions(num_threads=data_config.num_threads, prefetch_buffer_size=data_config.prefetch)
    logging.info('data: %d source items, local batch %d of %d', len(source), local_batch, global_batch)
    return iter(local.to_iter_dataset(options))


def eval_images(source, data_config, image_size, seed, count):
    """A fixed batch of crops (count, h, w, c) for the reconstruction grids: one per source image first."""
    transform = RandomResizedCropFlip(image_size, data_config.crop_scale, flip=False)
    dataset = grain.MapDataset.source(source).repeat(None).seed(seed).random_map(transform)
    return np.stack([dataset[i] for i in range(count)])

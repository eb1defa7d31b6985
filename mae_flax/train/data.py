"""Input pipeline (grain): images -> uint8 crops (b, h, w, c), deterministic, sharded by process, checkpointable.

Element k of the global stream is the same crop on any number of processes: the source is shuffled per epoch
and cropped with a seed derived from (seed, k). Global batch i is elements [i * B, (i + 1) * B); process p of P
reads only its contiguous slice of it, so the global array built from the local batches is the same batch
whatever P is.

Sources: 'default' (photographs shipped with scikit-image), a folder of images (its sorted file list cached, see
`image_index`), a .npy/.npz array, or ArrayRecord shards of encoded images (`mae-prepare` writes them). Throughput:
`workers` processes (grain's mp_prefetch), each reading ahead with `num_threads` threads, and optionally JPEG draft
decoding (`draft`, see `decode`). Neither the number of workers nor of threads changes the stream.
"""

import glob
import hashlib
import io
import json
import logging
import math
import os
import re
import time
import warnings
from pathlib import Path

import grain
import numpy as np
import skimage
from absl import flags
from PIL import Image, ImageOps

from mae_core.errors import UsageError
from mae_core.fields import pair
from mae_flax.files import atomic_path

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


# EXIF orientation -> whether it mirrors the shown image's (x, y) axes relative to the stored pixels
ORIENTATION_TAG = 0x0112
MIRRORED_AXES = {
    2: (True, False),
    3: (True, True),
    4: (False, True),
    6: (True, False),
    7: (True, True),
    8: (False, True),
}
TURNED = (5, 6, 7, 8)  # orientations that swap width and height
MAX_DRAFT_REDUCTION = 8  # libjpeg scales by 1/2, 1/4 and 1/8 while decoding


def draft_reduction(box, output_size):
    """The largest of 1, 2, 4, 8 that leaves the crop `box` (left, top, right, bottom) at least `output_size`
    (height, width) pixels once the image is reduced by it."""
    crop_width, crop_height = box[2] - box[0], box[3] - box[1]
    height, width = output_size
    reduction = 1
    while (
        reduction < MAX_DRAFT_REDUCTION
        and crop_width >= 2 * reduction * width
        and crop_height >= 2 * reduction * height
    ):
        reduction *= 2
    return reduction


def _reduced_box(box, scale, size, reduced_size, mirrored):
    """A box in the shown image's pixels -> the same region of the image decoded at 1/scale. The stored image's
    partial last DCT block lies at the far end of an axis its EXIF orientation mirrors, so that axis is measured
    from its far edge."""
    (width, height), (reduced_width, reduced_height) = size, reduced_size

    def x(value):
        return reduced_width - (width - value) / scale if mirrored[0] else value / scale

    def y(value):
        return reduced_height - (height - value) / scale if mirrored[1] else value / scale

    left, top, right, bottom = box
    return x(left), y(top), x(right), y(bottom)


def decode(data, name, channels, choose_box, draft_size=None):
    """Encoded image bytes -> (8-bit PIL image, `choose_box(width, height)` in its pixels), as `to_8bit` shows it.

    With `draft_size` (height, width), a JPEG is decoded by libjpeg at 1/2, 1/4 or 1/8 of its size (PIL's
    `Image.draft`), the largest reduction that leaves the chosen crop at least `draft_size`: most of the decoding
    work is skipped, and the crop is taken from the reduced image. The result is a function of the file alone (the
    same bytes give the same pixels), so the stream stays deterministic, but it is not the full-resolution crop:
    the reduction averages 2x2 to 8x8 pixel blocks in the DCT domain where bicubic resizing from full resolution
    would filter: measured on 64px crops of a 1000x750 photograph (JPEG quality 90), a mean absolute difference
    of 1.5 gray levels of 255 (at most 3.1 over 20 crops), the same for all eight EXIF orientations. big_vision's and
    tf.data's `decode_and_crop_jpeg` instead decode only the crop's blocks at full resolution (exact, and faster
    the smaller the crop); PIL offers no such region decode, so this is the approximation. Other formats, and
    JPEGs whose crop is smaller than twice `draft_size`, decode exactly as without it."""
    with Image.open(io.BytesIO(data)) as image:
        if draft_size is None or image.format != 'JPEG':
            image = to_8bit(image, channels, name)
            return image, choose_box(image.width, image.height)
        orientation = image.getexif().get(ORIENTATION_TAG, 1)  # a JPEG's EXIF is in its header: known before decoding
        size = image.size[::-1] if orientation in TURNED else image.size
        box = choose_box(*size)
        reduction = draft_reduction(box, draft_size)
        scale = 1
        if reduction > 1:
            stored_width = image.width
            drafted = image.draft(image.mode, (image.width // reduction, image.height // reduction))
            scale = stored_width / drafted[1][2] if drafted else 1  # (mode, (0, 0, width / scale, height / scale))
        image = to_8bit(image, channels, name)
    if scale != 1:
        box = _reduced_box(box, scale, size, image.size, MIRRORED_AXES.get(orientation, (False, False)))
    return image, box


class DecodedSource:
    """A source whose items are decoded PIL images already: nothing to draft."""

    def read(self, index, choose_box, draft_size=None):
        image = self[index]
        return image, choose_box(image.width, image.height)


class PhotoSource(DecodedSource):
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


class EncodedSource:
    """A source of encoded image files (`_bytes(index)`, `_name(index)`), decoded as they are read. An unreadable
    item is skipped with a warning and replaced by the next readable one, so batches keep their size and the stream
    stays deterministic. A sample is decoded at start-up, before anything compiles."""

    def __init__(self, channels):
        self.channels = channels
        self.skipped = set()
        for index in np.linspace(0, len(self) - 1, min(SAMPLE, len(self))).astype(int):
            self[int(index)]

    def __getitem__(self, index):
        return self.read(index, lambda width, height: None)[0]

    def read(self, index, choose_box, draft_size=None):
        """(image, box): item `index`, or the next readable one, decoded (see `decode`)."""
        for offset in range(len(self)):
            item = (index + offset) % len(self)
            name = self._name(item)
            try:
                return decode(self._bytes(item), name, self.channels, choose_box, draft_size)
            except UsageError:  # readable, but not what an image file may hold: no silent substitute
                raise
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                if name not in self.skipped:
                    self.skipped.add(name)
                    warnings.warn(
                        f'skipping unreadable image {name} ({len(self.skipped)} so far): {error}', stacklevel=2
                    )
        raise UsageError(f'none of the {len(self)} images in {self.where} could be read')


def _suffix(name):
    """pathlib's Path(name).suffix, lowercased."""
    dot = name.rfind('.')
    return name[dot:].lower() if 0 < dot < len(name) - 1 else ''


def _walk(folder):
    """(sorted image files relative to `folder`, {sub-folder: mtime_ns}) with the rules of today's and earlier
    `sorted(Path(folder).rglob('*'))`: hidden names included, symbolic links to folders not followed, symbolic
    links to files kept, unlistable folders passed over, sorted by path components (so 'a/b' before 'a-c')."""
    files, folders = [], {}
    pending = ['']
    while pending:
        relative = pending.pop()
        try:
            folders[relative] = os.stat(os.path.join(folder, relative)).st_mtime_ns  # before listing: see below
            with os.scandir(os.path.join(folder, relative)) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            name = f'{relative}/{entry.name}' if relative else entry.name
            try:
                if entry.is_dir() and not entry.is_symlink():
                    pending.append(name)
                elif _suffix(entry.name) in IMAGE_SUFFIXES and entry.is_file():
                    files.append(name)
            except OSError:
                continue
    files.sort(key=lambda name: name.split('/'))
    return files, folders


def _index_paths(folder):
    """Where a folder's index may be cached: beside the folder (shared by every host that mounts it), else in the
    user's cache folder."""
    key = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    cache = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'mae' / 'index' / f'{key}.json'
    return ([folder.parent / f'.{folder.name}.mae-index.json'] if folder.name else []) + [cache]


INDEX_VERSION = 1
RACY_SECONDS = 2  # file systems that keep mtimes to the second (or two) cannot date a change made within one


def image_index(folder):
    """The sorted image files under `folder` (relative paths), listed once and cached.

    Walking a million files takes minutes on a network file system, on every host, at every start. The list is
    cached in `.NAME.mae-index.json` beside the folder (else in ~/.cache/mae/index/) with the modification time of
    every folder in the tree. Adding, removing or renaming a file changes its folder's mtime, and adding or
    removing a folder changes its parent's, so the cache is used only when every recorded folder still has its
    recorded mtime, and listed again otherwise (a file rewritten in place keeps its name: the list still holds).
    A folder changed less than RACY_SECONDS before the walk is not cached, since a coarse mtime could not show a
    later change within the same tick (git's 'racy' rule). The cache lies outside the folder, so writing it changes
    nothing it records. The order is that of `sorted(Path(folder).rglob(...))`, the same on every host."""
    folder = Path(os.path.abspath(folder))
    header = {'version': INDEX_VERSION, 'folder': str(folder), 'suffixes': list(IMAGE_SUFFIXES)}
    for path in _index_paths(folder):
        try:
            cached = json.loads(path.read_text())
            if {key: cached[key] for key in header} == header and all(
                os.stat(folder / relative).st_mtime_ns == mtime for relative, mtime in cached['folders'].items()
            ):
                logging.info('data: the index of %s cached in %s', folder, path)
                return cached['files']
        except (OSError, ValueError, KeyError, TypeError):
            continue
    started = time.time_ns()
    files, folders = _walk(folder)
    if files and max(folders.values()) < started - RACY_SECONDS * 10**9:
        for path in _index_paths(folder):
            try:
                with atomic_path(path) as tmp:
                    tmp.write_text(json.dumps(header | {'folders': folders, 'files': files}))
                logging.info('data: indexed %d images in %s, cached in %s', len(files), folder, path)
                break
            except OSError:
                continue
    return files


class FolderSource(EncodedSource):
    """Every image file under a folder (recursive, see IMAGE_SUFFIXES), in sorted order (see `image_index`)."""

    def __init__(self, folder, channels):
        self.where = Path(folder)
        if not self.where.is_dir():
            raise UsageError(
                f'data source {folder} is not a folder, a .npy/.npz file, .array_record shards or "default"'
            )
        self.files = image_index(self.where)  # relative names: a few bytes each for every worker process
        if not self.files:
            raise UsageError(
                f'no images in {folder}: expected {", ".join(IMAGE_SUFFIXES)} files (searched recursively)'
            )
        super().__init__(channels)

    def __len__(self):
        return len(self.files)

    def _name(self, index):
        return self.where / self.files[index]

    def _bytes(self, index):
        return (self.where / self.files[index]).read_bytes()


SHARD_NAME = re.compile(r'-(\d+)-of-(\d+)\.array_record$')


def array_record_shards(source):
    """`source` -> its sorted .array_record files: one file, a glob pattern ('/data/train-*.array_record'), or a
    folder holding them at its top level. Of shards named NAME-00003-of-00016.array_record (as mae-prepare writes
    them), a folder or pattern must find all."""
    path = Path(source)
    if path.is_dir():
        shards = sorted(path.glob('*.array_record'))
    elif glob.has_magic(str(source)) and not path.exists():
        shards = sorted(Path(name) for name in glob.glob(str(source)) if Path(name).is_file())
    else:
        shards = [path] if path.is_file() else []
    if not shards:
        raise UsageError(f'data source {source}: no .array_record files found there')
    totals = {int(match[2]) for match in map(SHARD_NAME.search, map(str, shards)) if match}
    if not path.is_file() and len(totals) == 1 and (expected := totals.pop()) != len(shards):
        raise UsageError(
            f'data source {source}: expected {expected} shards as their names say, found {len(shards)} '
            '(an unfinished mae-prepare?)'
        )
    return shards


class ArrayRecordSource(EncodedSource):
    """Encoded images (JPEG, PNG, ... bytes), one per record, in ArrayRecord shards read in sorted order: record k
    of the concatenation is item k (mae-prepare packs a folder in its sorted order, so item k is the folder's)."""

    def __init__(self, source, channels):
        self.where = source
        shards = array_record_shards(source)
        try:
            self.records = grain.sources.ArrayRecordDataSource([str(path) for path in shards])
        except (OSError, ValueError, RuntimeError) as error:
            text = ' '.join(str(error).split())[:200]
            raise UsageError(f'data source {source}: not readable as ArrayRecord shards ({text})') from None
        if not len(self.records):
            raise UsageError(f'data source {source}: the {len(shards)} .array_record files hold no records')
        super().__init__(channels)

    def __len__(self):
        return len(self.records)

    def _name(self, index):
        return f'record {index} of {self.where}'

    def _bytes(self, index):
        return self.records[index]


class ArraySource(DecodedSource):
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


def is_array_record(source):
    """Whether data.source names ArrayRecord shards: a .array_record file or pattern, or a folder holding them."""
    path = Path(source)
    return str(source).endswith('.array_record') or (path.is_dir() and any(path.glob('*.array_record')))


def make_source(source, image_size, channels):
    """The config's data.source -> a random-access source of images. Fails here, before anything compiles."""
    if source is None:
        raise UsageError(
            'no data: set --config.data.source to a folder of images, a .npy/.npz file, .array_record shards '
            'or "default"'
        )
    if source == 'default':
        return PhotoSource(image_size, channels)
    if source == 'digits':  # the train split of the embedded digits, labels set aside (mae_flax.train.labeled)
        from mae_flax.train import labeled

        return labeled.digits(channels, labeled.DIGITS_VAL_FRACTION).train.images
    if str(source).endswith(('.npy', '.npz')):
        return ArraySource(source, channels)
    if is_array_record(source):
        return ArrayRecordSource(source, channels)
    return FolderSource(source, channels)


def crops(source, data_config, image_size, seed):
    """The global, endless, per-epoch reshuffled stream of crops: element k depends only on (seed, k) and, with
    draft decoding, on whether it is on."""
    dataset = grain.MapDataset.range(len(source))
    if isinstance(source, PhotoSource):
        dataset = dataset.repeat(DEFAULT_CROPS_PER_PHOTO)
    transform = RandomResizedCropFlip(source, image_size, data_config.crop_scale, data_config.flip, data_config.draft)
    return dataset.seed(seed).shuffle().repeat(None).random_map(transform)


def train_iterator(source, data_config, image_size, seed, global_batch, process_index, process_count):
    """This process's part of each global batch, uint8 (global_batch / process_count, h, w, c); the iterator's
    state (get_state/set_state) goes into checkpoints.

    With data_config.workers = 0 the batches are made in this process by num_threads threads, reading ahead
    `prefetch` batches. With W > 0, grain starts W worker processes (mp_prefetch, spawned: no fork of a process
    that holds accelerators); worker w makes local batches w, w + W, ... with its own num_threads threads and
    `prefetch` batches read ahead, and they are interleaved back in order, so the stream and the checkpointed
    state do not depend on W. Memory: about W x (prefetch + 1) local batches. Close the iterator when done
    (`iterator.close()`) to stop the workers."""
    return iterate(
        crops(source, data_config, image_size, seed),
        data_config,
        global_batch,
        process_index,
        process_count,
        len(source),
    )


def iterate(stream, data_config, global_batch, process_index, process_count, source_size):
    """An endless stream of elements -> this process's rows of each global batch, as an iterator whose state
    checkpoints (see train_iterator)."""
    if global_batch % process_count:
        raise UsageError(f'batch_size {global_batch} must be divisible by the number of processes {process_count}')
    local_batch = global_batch // process_count
    batches = stream.batch(local_batch, drop_remainder=True)
    # global batch i is local batches [i * P, (i + 1) * P): process p takes the p-th of each group
    local = batches[process_index::process_count]
    options = grain.ReadOptions(num_threads=data_config.num_threads, prefetch_buffer_size=data_config.prefetch)
    dataset = local.to_iter_dataset(options)
    if data_config.workers:
        if not flags.FLAGS.is_parsed():  # grain reads its absl flags' defaults; mae-train has parsed them
            flags.FLAGS.mark_as_parsed()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=data_config.workers))
    logging.info(
        'data: %d source items, local batch %d of %d, %d worker processes',
        source_size,
        local_batch,
        global_batch,
        data_config.workers,
    )
    return iter(dataset)


def eval_images(source, data_config, image_size, seed, count):
    """A fixed batch of crops (count, h, w, c) for the reconstruction grids: one per source image first, decoded
    at full resolution."""
    transform = RandomResizedCropFlip(source, image_size, data_config.crop_scale, flip=False)
    dataset = grain.MapDataset.range(len(source)).repeat(None).seed(seed).random_map(transform)
    return np.stack([dataset[i] for i in range(count)])

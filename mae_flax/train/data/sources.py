"""Random-access sources of images for the input pipeline: the embedded photographs, the digits' images, a
folder of image files (its file list cached, see `image_index`), ArrayRecord shards of encoded images, a
.npy/.npz array. Each item is a PIL image; `make_source` picks one from config.data.source.
"""

import glob
import hashlib
import json
import logging
import os
import re
import time
import warnings
from pathlib import Path

import grain
import numpy as np
from PIL import Image

from mae_core.errors import UsageError
from mae_core.fields import pair
from mae_flax import photos
from mae_flax.files import atomic_path
from mae_flax.files.images import IMAGE_SUFFIXES, UNREADABLE, decode, describe_range, to_8bit
from mae_flax.train.data import digits

# real photographs that ship inside scikit-image (no download), without the ones held out to measure the run
DEFAULT_PHOTOS = photos.TRAINING
DEFAULT_CROPS_PER_PHOTO = 256  # the default "epoch": this many random crops of each photo


SAMPLE = 64  # items of an array source checked at start-up, before anything compiles


class DecodedSource:
    """A source whose items are decoded PIL images already: nothing to draft, nothing unreadable."""

    def read(self, index, choose_box, draft_size=None):
        image = self[index]
        return image, choose_box(image.width, image.height)

    def image_or_none(self, index):
        return self[index]


class ArrayImages(DecodedSource):
    """uint8 images (n, h, w, c) in memory as a source of PIL images."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index]
        return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


class PhotoSource(DecodedSource):
    """The embedded default: scikit-image's photographs (mae_flax.photos.TRAINING: never the held-out ones, unless
    `names` asks for them), decoded once and shrunk to a few times the crop size."""

    def __init__(self, image_size, channels, names=DEFAULT_PHOTOS):
        self.images = []
        for name in names:
            with Image.open(photos.path(name)) as image:
                image = to_8bit(image, channels, photos.path(name))
                # shortest side 4x the crop: crops stay sharp, resizing them stays cheap
                factor = min(1.0, 4 * max(pair(image_size)) / min(image.size))
                self.images.append(image.resize((round(image.width * factor), round(image.height * factor))))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index]


class EncodedSource:
    """A source of encoded image files (`_bytes(index)`, `_name(index)`), decoded as they are read; an unreadable
    file is named in a warning once. Training reads through `read`, which replaces an unreadable item by the next
    readable one, so batches keep their size and the stream stays deterministic; validation reads through
    `image_or_none`, which never substitutes, so that an unreadable image is left out of the count (a source with
    `leave_out` says so in its warning). A sample is decoded at start-up, before anything compiles; none of it
    readable, every item is tried, and none readable is a UsageError."""

    leave_out = False  # a validation split's: its warnings say that an unreadable image is left out

    def __init__(self, channels):
        self.channels = channels
        self.skipped = set()
        sample = np.linspace(0, len(self) - 1, min(SAMPLE, len(self))).astype(int)
        if not any([self.image_or_none(int(index)) is not None for index in sample]):  # every one checked
            self.read(0, lambda width, height: None)

    def __getitem__(self, index):
        return self.read(index, lambda width, height: None)[0]

    def read(self, index, choose_box, draft_size=None):
        """(image, box): item `index`, or the next readable one, decoded (see `decode`)."""
        for offset in range(len(self)):
            decoded = self._decoded((index + offset) % len(self), choose_box, draft_size)
            if decoded is not None:
                return decoded
        raise UsageError(f'none of the {len(self)} images in {self.where} could be read')

    def image_or_none(self, index):
        """Item `index` itself, decoded, or None if its file cannot be decoded: never a substitute."""
        decoded = self._decoded(index, lambda width, height: None)
        return None if decoded is None else decoded[0]

    def _decoded(self, index, choose_box, draft_size=None):
        """(image, box) of item `index`, or None if its file cannot be decoded (named in a warning once)."""
        name = self._name(index)
        try:
            return decode(self._bytes(index), name, self.channels, choose_box, draft_size)
        except UsageError:  # readable, but not what an image file may hold: no silent substitute
            raise
        except UNREADABLE as error:
            if name not in self.skipped:
                self.skipped.add(name)
                what = (
                    'leaving unreadable image {} out of validation'
                    if self.leave_out
                    else 'skipping unreadable image {}'
                )
                warnings.warn(f'{what.format(name)} ({len(self.skipped)} so far): {error}', stacklevel=4)
            return None


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
        if not isinstance(arrays, np.ndarray):  # a .npz: its images array read, the archive closed
            with arrays as archive:
                names = list(archive.files)
                if 'images' not in names and len(names) != 1:
                    raise UsageError(f"{path} holds arrays {names}: expected one named 'images', or a single array")
                try:
                    arrays = archive['images' if 'images' in names else names[0]]
                except (ValueError, OSError, EOFError) as error:
                    raise UsageError(f'data source {path} is not a numpy array file ({type(error).__name__})') from None
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
                f'{self.path}: image {index} is float, so its values must be in [0, 1]; found {describe_range(image)} '
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
    if source == digits.NAME:  # the train split of the embedded digits, labels set aside
        return ArrayImages(digits.load(channels)[0][0])
    if str(source).endswith(('.npy', '.npz')):
        return ArraySource(source, channels)
    if is_array_record(source):
        return ArrayRecordSource(source, channels)
    return FolderSource(source, channels)

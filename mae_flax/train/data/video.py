"""Video clips for the video family (VideoMAE): sources of clips and the transform that crops them.

A clip is `num_frames` frames taken every `frame_stride` frames from a random start, as VideoMAE samples
(`num_frames x sampling_rate`), then one random-resized crop and flip for all its frames (the same box in each, so
motion is kept): uint8 (t, h, w, c). Sources:

- `PannedPhotos`, the embedded default (no download): each clip a camera pan and zoom over one of the photographs
  bundled with scikit-image, a new path per clip. What a run on it shows: the pipeline, the model and the loss
  working end to end, and reconstructions that follow the motion (a masked tube is filled from where the same
  content is visible in other frames); not a video benchmark.
- `VideoFolder`: every video file under a folder, decoded by mae_flax.files.videos with PyAV (FFmpeg's libraries
  in a wheel for every platform, no torch needed; decord has no wheels for recent Pythons, torchcodec needs torch
  and a system FFmpeg). A file that cannot be decoded is skipped with a warning naming it, its clip taken
  from the next readable file, as image folders do; none readable is an error.

Clips are drawn by grain exactly as images are (train/data/pipeline.py): element k of the stream depends only on
(seed, k), on any number of processes, and the iterator's state checkpoints.
"""

import warnings
from pathlib import Path

import grain
import numpy as np
from PIL import Image

from mae_core.errors import UsageError
from mae_core.fields import pair
from mae_flax.files.videos import UNREADABLE, VIDEO_SUFFIXES, decode_frames, frame_count
from mae_flax.train.data.augment import RandomResizedCropFlip
from mae_flax.train.data.pipeline import iterate
from mae_flax.train.data.sources import DEFAULT_PHOTOS, PhotoSource

CLIPS_PER_PHOTO = 64  # the default's epoch: 64 pans over each of its photographs


class PannedPhotos:
    """The embedded default: clips of a camera panning and zooming over the bundled photographs."""

    where = 'the embedded photographs'

    def __init__(self, image_size, channels, names=DEFAULT_PHOTOS):
        self.photos = PhotoSource(image_size, channels, names).images  # shortest side 4x the crop
        self.frame_size = 2 * max(pair(image_size))  # every frame of a clip the same square, twice the crop

    def __len__(self):
        return len(self.photos)

    def frames(self, index, count, stride, rng):
        """`count` frames of a straight pan and zoom over photo `index`: a window of 40-80% of the shorter side
        moving from a random place to another (and growing or shrinking) over the clip; `stride` steps per frame."""
        photo = self.photos[index]
        width, height = photo.size
        steps = (count - 1) * stride or 1

        def window():
            side = rng.uniform(0.4, 0.8) * min(width, height)
            return side, rng.uniform(0, width - side), rng.uniform(0, height - side)

        (side0, left0, top0), (side1, left1, top1) = window(), window()
        windows = []
        for k in range(count):
            t = k * stride / steps
            windows.append((side0 + t * (side1 - side0), left0 + t * (left1 - left0), top0 + t * (top1 - top0)))
        return self.render(photo, windows)

    def render(self, photo, windows):
        """The frames a camera sees through square windows (side, left, top) of `photo`, each resized to the
        frame size."""
        width, height = photo.size
        size = self.frame_size
        return [
            photo.resize(
                (size, size),
                Image.Resampling.BICUBIC,
                box=(left, top, min(left + side, width), min(top + side, height)),
            )
            for side, left, top in windows
        ]


def video_files(folder):
    """The sorted video files under `folder` (relative paths), or a UsageError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f'data source {folder} is not a folder of videos or "default"')
    files = sorted(
        str(path.relative_to(folder))
        for path in folder.rglob('*')
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()
    )
    if not files:
        raise UsageError(f'no videos in {folder}: expected {", ".join(VIDEO_SUFFIXES)} files (searched recursively)')
    return files


class VideoFolder:
    """Every video file under a folder, in sorted order; clips decoded as they are read."""

    def __init__(self, folder, channels):
        self.where, self.channels = Path(folder), channels
        self.files = video_files(self.where)
        self.skipped = set()
        self.counts = {}

    def __len__(self):
        return len(self.files)

    def frames(self, index, count, stride, rng):
        """A clip of item `index`, or of the next readable file: `count` frames every `stride` from a random start
        (VideoMAE's sampling; a video shorter than the span repeats its last frame)."""
        return self.read(index, count, stride, rng)[0]

    def read(self, index, count, stride, rng):
        """(frames, the item they come from): `frames` of item `index`, or of the next readable file."""
        for offset in range(len(self)):
            item = (index + offset) % len(self)
            path = self.where / self.files[item]
            try:
                total = self.counts.get(path) or self.counts.setdefault(path, frame_count(path))
                span = (count - 1) * stride + 1
                start = int(rng.integers(0, max(total - span, 0) + 1))
                return decode_frames(path, [start + k * stride for k in range(count)], self.channels), item
            except UNREADABLE as error:
                if path not in self.skipped:
                    self.skipped.add(path)
                    warnings.warn(
                        f'skipping unreadable video {path} ({len(self.skipped)} so far): {error}', stacklevel=2
                    )
        raise UsageError(f'none of the {len(self)} videos in {self.where} could be read')


class ClipCropFlip(RandomResizedCropFlip):
    """A clip of `source` -> uint8 (t, h, w, c): one random-resized crop box and one flip for all its frames."""

    def __init__(self, source, image_size, num_frames, stride, scale, flip):
        super().__init__(source, image_size, scale, flip)
        self.num_frames, self.stride = num_frames, stride

    def random_map(self, element, rng):
        return self.crop(self.source.frames(int(element), self.num_frames, self.stride, rng), rng)[0]

    def crop(self, frames, rng):
        """(uint8 (t, h, w, c), whether it was flipped): the frames under one random box and flip."""
        box = self._box(*frames[0].size, rng)
        flip = self.flip and rng.random() < 0.5
        clip = []
        for frame in frames:
            frame = frame.resize((self.width, self.height), Image.Resampling.BICUBIC, box=box)
            if flip:
                frame = frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            array = np.asarray(frame, dtype=np.uint8)
            clip.append(array[..., None] if array.ndim == 2 else array)
        return np.stack(clip), flip  # (t, h, w, c)


def make_source(source, image_size, channels):
    """config.data.source for a video model -> a source of clips; fails here, before anything compiles."""
    if source is None:
        raise UsageError('no data: set --config.data.source to a folder of videos or "default"')
    if source == 'default':
        return PannedPhotos(image_size, channels)
    return VideoFolder(source, channels)


def clip_stream(source, data_config, spec, seed):
    """The global, endless, per-epoch reshuffled stream of clips (element k depends only on (seed, k))."""
    dataset = grain.MapDataset.range(len(source))
    if isinstance(source, PannedPhotos):
        dataset = dataset.repeat(CLIPS_PER_PHOTO)
    transform = ClipCropFlip(
        source, spec.image_size, spec.num_frames, data_config.frame_stride, data_config.crop_scale, data_config.flip
    )
    return dataset.seed(seed).shuffle().repeat(None).random_map(transform)


def train_iterator(source, data_config, spec, seed, global_batch, process_index, process_count):
    """This process's rows of each global batch of clips, uint8 (local batch, t, h, w, c); see
    pipeline.train_iterator for the workers, threads and the checkpointed state."""
    stream = clip_stream(source, data_config, spec, seed)
    return iterate(stream, data_config, global_batch, process_index, process_count, len(source))


def eval_clips(source, data_config, spec, seed, count):
    """A fixed batch of clips (count, t, h, w, c) for the reconstruction strips, one per source item first."""
    transform = ClipCropFlip(
        source, spec.image_size, spec.num_frames, data_config.frame_stride, data_config.crop_scale, flip=False
    )
    dataset = grain.MapDataset.range(len(source)).repeat(None).seed(seed).random_map(transform)
    return np.stack([dataset[i] for i in range(count)])

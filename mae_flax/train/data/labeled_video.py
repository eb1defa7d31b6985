"""Labelled video clips for fine-tuning and linear probing a video model (mae-finetune, mae-linprobe): a train and a
validation split of clips, (t, h, w, c) each, as `labeled` gives images to an image model.

Sources (`config.data.source`):
- 'motion', the embedded default (no download): clips of a camera moving over the photographs bundled with
  scikit-image (video.PannedPhotos), labelled by the motion: pan left, pan right, zoom in, zoom out. Each motion and
  its mirror in time (pan left / right, zoom in / out) draw the same windows in reverse order, so a single frame, or
  the frames as a set, is equally likely under both: only the order of the frames tells them apart. Training clips
  are new paths over mae_flax.photos.TRAINING; validation is VAL_PATHS fixed paths of each motion over the held-out
  photographs (photos.HELDOUT), which training never sees.
- a folder in the Kinetics layout, `train/<class>/*.mp4` and `val/<class>/*` (mp4, avi, mkv, webm, mov; classes: the
  sorted names of train's sub-folders, val's must be among them), decoded by mae_flax.files.videos (PyAV).

Training clips are video.py's: `num_frames` frames every `data.frame_stride` from a random start (VideoMAE's
sampling), one random-resized crop and flip for all the frames; a flipped clip takes its class's mirror (`mirrored`:
a pan left flipped is a pan right), and an unreadable training video gives way to the next readable one, with that
one's label. Validation is every clip once, in order: the central clip of a video (VideoMAE's test clip), each frame's
shorter side resized to the model's and centre-cropped (its image processor's); an unreadable validation video is
left out of the count with one warning naming it, never replaced.
"""

import warnings
from pathlib import Path

import grain
import numpy as np

from mae_core.errors import UsageError
from mae_flax import photos
from mae_flax.files.images import IMAGE_SUFFIXES
from mae_flax.files.videos import (
    UNREADABLE,
    VIDEO_SUFFIXES,
    central_indices,
    decode_frames,
    frame_count,
    resize_and_crop,
)
from mae_flax.train.data import labeled, pipeline
from mae_flax.train.data.labeled import Labeled, Split, padded_batches, with_num_classes
from mae_flax.train.data.video import ClipCropFlip, PannedPhotos, VideoFolder

MOTION = 'motion'
MOTIONS = ('pan_left', 'pan_right', 'zoom_in', 'zoom_out')  # the camera's motion; label k is MOTIONS[k]
MIRRORED = (1, 0, 2, 3)  # a clip flipped left-right: a pan left becomes a pan right, a zoom stays a zoom
VAL_PATHS = 4  # validation clips of each motion over each held-out photograph
VAL_SEED = 20261207  # the validation paths' (training's come from config.seed through grain)


def motion_windows(motion, width, height, count, stride, rng):
    """The camera's square window (side, left, top) over a `width` x `height` photo in each of `count` frames, frame k
    at k * stride steps of the motion's straight path. A pan keeps a window of 40-60% of the shorter side and moves
    it 25-40% of that side sideways; a zoom keeps the centre and changes the side from 70-95% of the shorter side to
    45-60% of that. 'pan_left' and 'zoom_out' are 'pan_right' and 'zoom_in' of the same draws played backwards."""
    if motion not in MOTIONS:
        raise ValueError(f'motion must be one of {MOTIONS}, got {motion!r}')
    shorter = min(width, height)
    if motion.startswith('pan'):
        side = rng.uniform(0.4, 0.6) * shorter
        travel = rng.uniform(0.25, 0.4) * shorter
        left, top = rng.uniform(0, width - side - travel), rng.uniform(0, height - side)
        start, end = (side, left, top), (side, left + travel, top)
    else:
        big = rng.uniform(0.7, 0.95) * shorter
        small = big * rng.uniform(0.45, 0.6)
        centre_x, centre_y = rng.uniform(big / 2, width - big / 2), rng.uniform(big / 2, height - big / 2)
        start = (big, centre_x - big / 2, centre_y - big / 2)
        end = (small, centre_x - small / 2, centre_y - small / 2)
    steps = (count - 1) * stride or 1
    windows = [tuple(a + k * stride / steps * (b - a) for a, b in zip(start, end, strict=True)) for k in range(count)]
    return windows if motion in ('pan_right', 'zoom_in') else windows[::-1]


class MotionClips:
    """Clips of every motion over each of `names` (photographs): item k is photo k // 4 under motion k % 4; `rng_of`
    None draws a new path per read (training), else item k always takes the path of `rng_of(k)` (validation)."""

    mirrored = MIRRORED

    def __init__(self, image_size, channels, names, rng_of=None):
        self.panned = PannedPhotos(image_size, channels, names)
        self.rng_of = rng_of
        self.names = tuple(names)
        self.labels = np.tile(np.arange(len(MOTIONS), dtype=np.int32), len(names))

    def __len__(self):
        return len(self.labels)

    def read(self, index, count, stride, rng):
        """(frames, index): the clip of item `index`, frames of twice the model's size."""
        photo = self.panned.photos[index // len(MOTIONS)]
        rng = rng if self.rng_of is None else self.rng_of(index)
        windows = motion_windows(MOTIONS[index % len(MOTIONS)], *photo.size, count, stride, rng)
        return self.panned.render(photo, windows), index

    def clip_or_none(self, index, count, stride, image_size):
        """The validation clip of item `index`, centre-cropped (its fixed path: never None, nothing is unreadable)."""
        frames = self.read(index, count, stride, None)[0]
        return _centred(frames, image_size)


def motion(image_size, channels):
    """The embedded task: training paths over photos.TRAINING, fixed validation paths over photos.HELDOUT."""
    train = MotionClips(image_size, channels, photos.TRAINING)
    val = MotionClips(
        image_size,
        channels,
        [name for name in photos.HELDOUT for _ in range(VAL_PATHS)],
        rng_of=lambda index: np.random.default_rng((VAL_SEED, index)),
    )
    return Labeled(Split(train, train.labels), Split(val, val.labels), MOTIONS)


def _centred(frames, image_size):
    arrays = [np.asarray(resize_and_crop(frame, image_size), np.uint8) for frame in frames]
    return np.stack([array[..., None] if array.ndim == 2 else array for array in arrays])  # (t, h, w, c)


class ClassVideos(VideoFolder):
    """The videos of one split of a Kinetics layout, each labelled by its top sub-folder."""

    mirrored = None  # a flip keeps the class (Kinetics' actions; set config.data.flip=False for left/right classes)

    def __init__(self, folder, classes, channels):
        super().__init__(folder, channels)
        self.labels = labeled.class_labels(folder, self.files, classes, 'video')

    def clip_or_none(self, index, count, stride, image_size):
        """The central clip of video `index`, centre-cropped, or None if it cannot be decoded (named in a warning
        once): never a substitute."""
        path = self.where / self.files[index]
        try:
            frames = decode_frames(path, central_indices(frame_count(path), count, stride), self.channels)
        except UNREADABLE as error:
            if path not in self.skipped:
                self.skipped.add(path)
                warnings.warn(
                    f'leaving unreadable video {path} out of validation ({len(self.skipped)} so far): {error}',
                    stacklevel=2,
                )
            return None
        return _centred(frames, image_size)


def video_folder(root, channels):
    """A Kinetics layout, ROOT/train/<class>/* and ROOT/val/<class>/*."""
    root = Path(root)
    if not (root / 'train').is_dir() or not (root / 'val').is_dir():
        raise UsageError(f'{root}: expected the Kinetics layout, {root}/train/<class>/*.mp4 and {root}/val/<class>/*')
    classes = labeled.class_names(root / 'train', lambda folder: _first_kind(folder) == 'videos', 'video')
    train = ClassVideos(root / 'train', classes, channels)
    val = ClassVideos(root / 'val', classes, channels)
    return Labeled(Split(train, train.labels), Split(val, val.labels), classes)


def _first_kind(folder):
    """'videos' or 'images': what the first media file found under `folder` is (None: neither), without walking a
    whole dataset."""
    for path in Path(folder).rglob('*'):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return 'videos'
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return 'images'
    return None


def source_kind(source):
    """What config.data.source holds: 'videos' ('motion', a folder whose train/ holds videos), 'images' ('digits',
    a .npz, a folder whose train/ holds images), or None (nothing that says: the source's own checks will)."""
    if source == MOTION:
        return 'videos'
    if not isinstance(source, str):
        return None
    if source == labeled.DIGITS or source.endswith('.npz'):
        return 'images'
    return _first_kind(Path(source) / 'train') if (Path(source) / 'train').is_dir() else None


def make_labeled(data_config, spec, num_classes=0):
    """config.data.source for a video model -> Labeled clips; every label checked against `num_classes` (0: the
    data's own)."""
    source = data_config.source
    if source == MOTION:
        clips = motion(spec.image_size, spec.channels)
    elif isinstance(source, str) and Path(source).is_dir():
        clips = video_folder(source, spec.channels)
    else:
        raise UsageError(
            f'data source {source!r}: a video model takes {MOTION!r} (the embedded clips) or a folder of videos in '
            'the Kinetics layout (train/<class>/*.mp4, val/<class>/*)'
        )
    return with_num_classes(clips, source, num_classes)


class LabeledClip(ClipCropFlip):
    """An index -> {'image': its clip (t, h, w, c) under one random-resized crop and flip, 'label': its class (the
    mirrored class when flipped, for a source that has one)}."""

    def __init__(self, split, spec, data_config):
        super().__init__(
            split.images,
            spec.image_size,
            spec.num_frames,
            data_config.frame_stride,
            data_config.crop_scale,
            data_config.flip,
        )
        self.labels, self.mirrored = split.labels, split.images.mirrored

    def random_map(self, element, rng):
        frames, index = self.source.read(int(element), self.num_frames, self.stride, rng)
        clip, flipped = self.crop(frames, rng)
        label = self.labels[index]
        return {'image': clip, 'label': np.int32(self.mirrored[label]) if flipped and self.mirrored else label}


def train_iterator(split, data_config, spec, seed, global_batch, process_index, process_count):
    """This process's rows of each global batch, {'image': uint8 (b, t, h, w, c), 'label': int32 (b,)}: mae-train's
    clip stream (video.train_iterator) with labels."""
    stream = grain.MapDataset.range(len(split.labels)).seed(seed).shuffle().repeat(None)
    stream = stream.random_map(LabeledClip(split, spec, data_config))
    return pipeline.iterate(stream, data_config, global_batch, process_index, process_count, len(split.labels))


def val_batches(split, spec, frame_stride, global_batch, process_index, process_count):
    """Every validation clip once, in order, as this process's rows of global batches {'image' (b, t, h, w, c),
    'label', 'valid'} (labeled.padded_batches: the last batch padded, an unreadable video valid 0)."""

    def read(index):
        return split.images.clip_or_none(index, spec.num_frames, frame_stride, spec.image_size)

    yield from padded_batches(split.labels, read, spec.input_shape, global_batch, process_index, process_count)

"""Video files -> the frames they show: the one video reader of training and the commands, through PyAV (FFmpeg's
libraries in a wheel for every platform: no torch, no system FFmpeg; the `video` extra).

`decode_frames` takes given frames of a file (training's random clips), `read_clip` a clip a user named
(mae-reconstruct: the middle `num_frames` frames every `stride`, as VideoMAE's test-time central clip, each resized
on its shorter side and centre-cropped as its image processor does). A file PyAV cannot decode raises one of
UNREADABLE for the caller to skip or report; `read_clip` reports it as a UsageError of one line naming the file.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from mae_core.errors import UsageError
from mae_core.fields import pair

VIDEO_SUFFIXES = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.m4v')
UNREADABLE = (OSError, ValueError, IndexError)  # PyAV's FFmpegError subclasses OSError and ValueError


def _av():
    try:
        import av
    except ImportError as error:
        raise UsageError(f'reading video files needs PyAV: pip install "twin-mae[video]" ({error})') from error
    return av


def frame_count(path):
    """Frames in a video file: its stream's count where the container records it, else counted by decoding."""
    with _av().open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.frames or sum(1 for _ in container.decode(stream))


def decode_frames(path, indices, channels):
    """The frames at `indices` (any order, may repeat) of a video file as 8-bit PIL images ('L' or 'RGB'); an index
    past the end takes the last frame (VideoMAE's rule for short videos). Decoded in order up to the last one
    needed: exact frames, where seeking lands on keyframes."""
    wanted = set(indices)
    decoded, last = {}, None
    with _av().open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = 'AUTO'
        for number, frame in enumerate(container.decode(stream)):
            if number in wanted:
                decoded[number] = frame.to_image()
            last = frame
            if number >= max(wanted):
                break
    if last is None:
        raise ValueError('no video frames in it')
    end = last.to_image()
    return [decoded.get(index, end).convert('L' if channels == 1 else 'RGB') for index in indices]


def central_indices(total, num_frames, stride):
    """The middle clip of a video of `total` frames: `num_frames` frames every `stride`."""
    span = (num_frames - 1) * stride + 1
    start = max(total - span, 0) // 2
    return [start + k * stride for k in range(num_frames)]


def resize_and_crop(image, image_size):
    """Shorter side to the model's, then the centre crop (VideoMAEImageProcessor's resize and center_crop)."""
    height, width = pair(image_size)
    factor = max(height / image.height, width / image.width)
    size = (max(width, round(image.width * factor)), max(height, round(image.height * factor)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def read_clip(path, num_frames, stride, image_size, channels):
    """A clip of a video file a user named -> uint8 (t, h, w, c); a UsageError of one line if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f'no such video: {path}')
    try:
        frames = decode_frames(path, central_indices(frame_count(path), num_frames, stride), channels)
    except UsageError:
        raise
    except UNREADABLE as error:
        raise UsageError(f'cannot read video {path}: {" ".join(str(error).split())}') from None
    arrays = [np.asarray(resize_and_crop(frame, image_size), np.uint8) for frame in frames]
    return np.stack([array[..., None] if array.ndim == 2 else array for array in arrays])

"""The input pipeline, a module per concern: `sources` (what config.data.source names: the embedded photos,
folders, ArrayRecord shards, arrays), `digits` (the embedded labelled digits), `augment` (random-resized crop and
flip), `pipeline` (the grain stream: deterministic, sharded by process, checkpointable), `labeled`
(mae-finetune's and mae-linprobe's labelled splits), `video` (clips for the video family) and `labeled_video`
(labelled clips). Images are decoded by mae_flax.files.images, the one image reader of training and the commands,
videos by mae_flax.files.videos. The names below are the interface the trainer, the commands and the tests
use."""

from mae_flax.files.images import IMAGE_SUFFIXES, decode, draft_reduction, to_8bit
from mae_flax.train.data.augment import RandomResizedCropFlip
from mae_flax.train.data.pipeline import crops, eval_images, iterate, train_iterator
from mae_flax.train.data.sources import (
    DEFAULT_CROPS_PER_PHOTO,
    DEFAULT_PHOTOS,
    SAMPLE,
    ArrayImages,
    ArrayRecordSource,
    ArraySource,
    DecodedSource,
    EncodedSource,
    FolderSource,
    PhotoSource,
    _walk,
    array_record_shards,
    image_index,
    is_array_record,
    make_source,
)

__all__ = [
    'DEFAULT_CROPS_PER_PHOTO',
    'DEFAULT_PHOTOS',
    'IMAGE_SUFFIXES',
    'SAMPLE',
    'ArrayImages',
    'ArrayRecordSource',
    'ArraySource',
    'DecodedSource',
    'EncodedSource',
    'FolderSource',
    'PhotoSource',
    'RandomResizedCropFlip',
    '_walk',
    'array_record_shards',
    'crops',
    'decode',
    'draft_reduction',
    'eval_images',
    'image_index',
    'is_array_record',
    'iterate',
    'make_source',
    'to_8bit',
    'train_iterator',
]

"""The input pipeline (grain): a source -> uint8 crops (b, h, w, c), deterministic, sharded by process, checkpointable.

Element k of the global stream is the same crop on any number of processes: the source is shuffled per epoch
and cropped with a seed derived from (seed, k). Global batch i is elements [i * B, (i + 1) * B); process p of P
reads only its contiguous slice of it, so the global array built from the local batches is the same batch
whatever P is. Throughput: `workers` processes (grain's mp_prefetch), each reading ahead with `num_threads`
threads, and optionally JPEG draft decoding (`draft`, see mae_flax.files.images.decode). Neither the number of
workers nor of threads changes the stream.
"""

import logging

import grain
import numpy as np
from absl import flags

from mae_core.errors import UsageError
from mae_flax.train.data.augment import ColorAugment, RandomResizedCropFlip, color_enabled
from mae_flax.train.data.sources import DEFAULT_CROPS_PER_PHOTO, PhotoSource


def crops(source, data_config, image_size, seed):
    """The global, endless, per-epoch reshuffled stream of crops: element k depends only on (seed, k) and, with
    draft decoding, on whether it is on."""
    dataset = grain.MapDataset.range(len(source))
    if isinstance(source, PhotoSource):
        dataset = dataset.repeat(DEFAULT_CROPS_PER_PHOTO)
    transform = RandomResizedCropFlip(source, image_size, data_config.crop_scale, data_config.flip, data_config.draft)
    stream = dataset.seed(seed).shuffle().repeat(None).random_map(transform)
    if color_enabled(data_config):  # off: not in the stream at all (bitwise the stream without it)
        stream = stream.random_map(
            ColorAugment(data_config.get('color_permute', 0.0), data_config.get('color_invert', 0.0))
        )
    return stream


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

"""What every pretraining config shares: the defaults (seed, compute, scanned blocks, schedule, data, mesh,
checkpoints, logging) and the two regimes that override them (the tests' seconds-long smoke run, ImageNet's
epochs at batch 4096). Each family's module starts from `base()` and says only what differs."""

import ml_collections
from ml_collections import config_dict

from mae_core.spec import IMAGENET_MEAN, IMAGENET_STD

IMAGENET_TRAIN_IMAGES = 1_281_167
# the photographs and ImageNet are standardised with ImageNet's statistics
PIXEL_STATS = dict(pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD)


def base(model):
    """The shared defaults around a model description (config.model, a mae_core.ModelSpec as a dict)."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = model
    config.dtype = 'float32'  # compute dtype; parameters and optimizer state are always float32
    # how the blocks run, not what they compute (mae_flax/stack.py): scanned, one block's program is compiled
    # whatever the depth. remat per block: 'none', 'full', 'dots_saveable', 'dots_with_no_batch_dims_saveable'.
    # Under a scan 'none' keeps every intermediate of every block (MAE-B, 64 images per v5e chip: 15.7 GiB, against
    # 5.3 unscanned); keeping the weight matmuls' outputs alone takes 4.4 GiB for ~4% more FLOPs (recomputing
    # the attention products, norms and GELUs): the default. benchmarks/README.md, TPU AOT.
    config.scan_layers = True
    config.remat = 'dots_with_no_batch_dims_saveable'

    config.total_steps = 500
    config.batch_size = 32  # global, per optimizer step
    config.grad_accum_steps = 1  # the batch is split into this many micro-batches, each one forward/backward
    config.optim = dict(
        base_lr=1.5e-4,  # lr = base_lr * batch_size / 256
        min_lr=0.0,
        warmup_steps=25,
        b1=0.9,
        b2=0.95,
        weight_decay=0.05,
        grad_clip_norm=0.0,  # 0 means no clipping
    )

    # 'default' (photographs shipped in scikit-image), a folder of jpg/png images, a .npy/.npz array, or ArrayRecord
    # shards of encoded images (a .array_record file, a glob of them, or a folder holding them: see mae-prepare).
    # workers: processes making batches (0: this one); num_threads and prefetch (batches) are per process; draft:
    # decode JPEGs reduced by up to 8x where the crop allows (faster, not bitwise the full-resolution crop)
    # color_permute / color_invert: the probability that a crop's colour channels are shuffled / inverted (for a
    # few photographs, which are otherwise memorised; 0: off, not in the stream)
    config.data = dict(
        source='default', crop_scale=(0.2, 1.0), flip=True, num_threads=4, prefetch=8, workers=0, draft=False,
        color_permute=0.0, color_invert=0.0,
    )  # fmt: skip
    # -1: every device not taken by the other axis; fsdp_min_size: parameters of fewer elements (per block: norm
    # scales, biases) stay replicated, gathering them costs more than it saves
    config.mesh = dict(data=-1, fsdp=1, fsdp_min_size=2**16)

    config.checkpoint = dict(every_steps=100, keep=3)
    # compiled programs kept for a restart: 'workdir' (WORKDIR/compilation_cache), a folder, or '' (none)
    config.compilation_cache = 'workdir'
    config.log_every = 10
    config.image_every = 100
    config.num_eval_images = 8
    return config


def smoke(config):
    """The tests' run: seconds on a CPU, a checkpoint every 4 steps, a log line every step."""
    config.update(total_steps=12, batch_size=16, log_every=1, image_every=6, num_eval_images=4)
    config.optim.update(base_lr=1e-2, warmup_steps=2)
    config.checkpoint.every_steps = 4
    return config


def imagenet(config, *, epochs, warmup_epochs):
    """The paper's regime: bf16 compute, batch 4096, epochs of ImageNet (data.source required), 16 data workers."""
    return regime(
        config, epochs=epochs, warmup_epochs=warmup_epochs, batch_size=4096, dataset_size=IMAGENET_TRAIN_IMAGES
    )


def regime(config, *, epochs, warmup_epochs, batch_size, dataset_size):
    """A paper's regime: bf16 compute, `epochs` of a dataset of `dataset_size` items at `batch_size`
    (data.source required), 16 data workers."""
    config.dtype = 'bfloat16'
    config.batch_size = batch_size
    steps_per_epoch = dataset_size // config.batch_size
    config.total_steps = epochs * steps_per_epoch
    config.optim.warmup_steps = warmup_epochs * steps_per_epoch
    config.data.source = config_dict.placeholder(str)  # required: --config.data.source=/path/to/the/dataset
    # about workers x (prefetch + 1) local batches in memory: 16 x 3 x 0.6 GB for all 4096 images on one host
    config.data.update(workers=16, num_threads=2, prefetch=2, draft=True)
    config.checkpoint.every_steps = 1000
    config.log_every = 50
    config.image_every = 5000
    return config

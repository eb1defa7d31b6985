"""MAE pretraining configs, after facebookresearch/mae.

    mae-train --workdir=/tmp/mae                                        # tiny, on the embedded photos
    mae-train --config=mae_flax/configs/mae.py:vit_b16 --workdir=/mnt/shared/mae_b16 \
        --config.data.source=/data/imagenet/train

Variants of the vit-pytorch family: `tiny` (the default: about a minute on a 2-core CPU), `smoke` (the tests'
seconds-long run), `vit_b16` and `vit_l16` (the paper's encoders at 224px with its 8-block, 512-wide decoder,
800 epochs of ImageNet at batch 4096), `vitpytorch` (vit-pytorch's README MAE). Of the official family
(facebookresearch/mae's MaskedAutoencoderViT, the architecture of the published checkpoints): `mae_vit_b16`,
`mae_vit_l16`, `mae_vit_h14` (its factories and recipe: norm_pix_loss, 800 epochs), `mae_tiny` and `mae_smoke`. Any field can be overridden on the command
line: `--config.batch_size=1024 --config.mesh.fsdp=8 --config.model.mae.norm_pix_loss=True`.

`config.model` is the model description (mae_core.ModelSpec): written as it is into the run's config.json and
beside every export, so every tool rebuilds the same model and feeds it the same pixel statistics.
"""

import ml_collections
from ml_collections import config_dict

from mae_core import official
from mae_core.spec import IMAGENET_MEAN, IMAGENET_STD, PAPER_DECODER, decode_variant

IMAGENET_TRAIN_IMAGES = 1_281_167
OFFICIAL_VARIANTS = {
    'mae_vit_b16': 'mae_vit_base_patch16',
    'mae_vit_l16': 'mae_vit_large_patch16',
    'mae_vit_h14': 'mae_vit_huge_patch14',
}
VARIANTS = (
    'tiny',
    'smoke',
    'vit_b16',
    'vit_l16',
    'vitpytorch',
    'mae_tiny',
    'mae_smoke',
    'digits',
    *OFFICIAL_VARIANTS,
)
# scikit-learn's 8x8 handwritten digits (mae_flax.train.labeled): gray, mean and std of their pixels in [0, 1]
DIGITS_MEAN, DIGITS_STD = (0.3053,), (0.3759,)


def digits_model():
    """The digits' MAE: the official family, 2x2 patches of the 8x8 gray images (16 patches), a 4-block encoder 64
    wide, a 2-block decoder 32 wide, half the patches masked (of 16 patches, 4 visible ones say too little)."""
    return dict(
        family=official.NAME,
        encoder=official.ENCODER_DEFAULTS
        | dict(img_size=8, patch_size=2, in_chans=1, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
        mae=official.MAE_DEFAULTS
        | dict(decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4, decoder_mlp_ratio=2.0, mask_ratio=0.5),
        pixel_mean=DIGITS_MEAN,
        pixel_std=DIGITS_STD,
    )


def model(encoder, **mae):
    """A vit-pytorch family MAE description; num_classes only shapes an (unused) head, kept for compatibility."""
    return dict(
        family='vit_pytorch',
        encoder=dict(
            image_size=32, patch_size=4, num_classes=0, pool='cls', channels=3, layer_norm_eps=1e-5, **encoder
        ),
        mae=dict(masking_ratio=0.75, norm_pix_loss=False) | mae,
        pixel_mean=IMAGENET_MEAN,  # the photographs and ImageNet are standardised with ImageNet's statistics
        pixel_std=IMAGENET_STD,
    )


def official_model(**encoder):
    """An official-family MAE description: facebookresearch/mae's MaskedAutoencoderViT keywords."""
    return dict(
        family=official.NAME,
        encoder=official.ENCODER_DEFAULTS | encoder,
        mae=dict(official.MAE_DEFAULTS),
        pixel_mean=IMAGENET_MEAN,
        pixel_std=IMAGENET_STD,
    )


def get_config(variant='tiny'):
    if variant not in VARIANTS:
        raise ValueError(f'unknown config variant {variant!r}: expected one of {", ".join(VARIANTS)}')
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = model(decode_variant('tiny'), decoder_dim=64, decoder_depth=2, decoder_heads=4, decoder_dim_head=16)
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
    config.data = dict(
        source='default', crop_scale=(0.2, 1.0), flip=True, num_threads=4, prefetch=8, workers=0, draft=False
    )
    # -1: every device not taken by the other axis; fsdp_min_size: parameters of fewer elements (per block: norm
    # scales, biases) stay replicated, gathering them costs more than it saves
    config.mesh = dict(data=-1, fsdp=1, fsdp_min_size=2**16)

    config.checkpoint = dict(every_steps=100, keep=3)
    # compiled programs kept for a restart: 'workdir' (WORKDIR/compilation_cache), a folder, or '' (none)
    config.compilation_cache = 'workdir'
    config.log_every = 10
    config.image_every = 100
    config.num_eval_images = 8

    if variant in ('mae_tiny', 'mae_smoke'):
        # the tiny models' sizes in the official family (which adds a cls token to both halves)
        config.model = official_model(img_size=32, patch_size=4, embed_dim=96, depth=3, num_heads=3, mlp_ratio=2.0)
        config.model.mae.update(decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4, decoder_mlp_ratio=4.0)
        variant = variant.removeprefix('mae_')
    if variant == 'tiny':
        config.optim.base_lr = 1e-2  # a small model on little data takes a large step
        # ~1 minute on 2 cores: by then the reconstructions carry each photo's colours and its coarse light and
        # dark layout (eval loss 1.77 -> 0.59); after 500 steps they were still colour blobs
        config.update(total_steps=1000, image_every=250)
        config.checkpoint.every_steps = 250
    elif variant == 'digits':
        # the pretraining half of the digits experiment (README): the train split of the embedded digits, no labels
        config.model = digits_model()
        config.data.update(source='digits', crop_scale=(0.6, 1.0), flip=False)
        config.optim.update(base_lr=5e-3, warmup_steps=100)
        config.update(total_steps=2000, batch_size=128, image_every=500, num_eval_images=16)
        config.checkpoint.every_steps = 500
    elif variant == 'smoke' and config.model.family == official.NAME:
        config.model.encoder.update(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2)
        config.model.mae.update(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
        _smoke(config)
    elif variant == 'smoke':
        config.model.encoder.update(image_size=16, patch_size=4, dim=32, depth=1, heads=2, dim_head=16, mlp_dim=64)
        config.model.mae.update(decoder_dim=16, decoder_depth=1, decoder_heads=2, decoder_dim_head=8)
        _smoke(config)
    elif variant in OFFICIAL_VARIANTS:
        # facebookresearch/mae's factories and its pretraining recipe (norm_pix_loss, 800 epochs, warmup 40)
        config.model = official_model(img_size=224, **official.FACTORIES[OFFICIAL_VARIANTS[variant]])
        config.model.mae.norm_pix_loss = True
        _imagenet(config, epochs=800, warmup_epochs=40)
    elif variant in ('vit_b16', 'vit_l16'):
        config.model.encoder.update(image_size=224, **decode_variant('B/16' if variant == 'vit_b16' else 'L/16'))
        config.model.mae.update(norm_pix_loss=True, **PAPER_DECODER)
        _imagenet(config, epochs=800, warmup_epochs=40)
    else:  # vitpytorch: its README's MAE
        config.model.encoder.update(
            image_size=256, patch_size=32, dim=1024, depth=6, heads=8, dim_head=64, mlp_dim=2048, num_classes=1000
        )
        config.model.mae.update(decoder_dim=512, decoder_depth=6, decoder_heads=8, decoder_dim_head=64)
        _imagenet(config, epochs=800, warmup_epochs=40)
    return config


def _smoke(config):
    config.update(total_steps=12, batch_size=16, log_every=1, image_every=6, num_eval_images=4)
    config.optim.update(base_lr=1e-2, warmup_steps=2)
    config.checkpoint.every_steps = 4


def _imagenet(config, *, epochs, warmup_epochs):
    config.dtype = 'bfloat16'
    config.batch_size = 4096
    steps_per_epoch = IMAGENET_TRAIN_IMAGES // config.batch_size
    config.total_steps = epochs * steps_per_epoch
    config.optim.warmup_steps = warmup_epochs * steps_per_epoch
    config.data.source = config_dict.placeholder(str)  # required: --config.data.source=/path/to/imagenet/train
    # about workers x (prefetch + 1) local batches in memory: 16 x 3 x 0.6 GB for all 4096 images on one host
    config.data.update(workers=16, num_threads=2, prefetch=2, draft=True)
    config.checkpoint.every_steps = 1000
    config.log_every = 50
    config.image_every = 5000

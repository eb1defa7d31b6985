"""MAE pretraining configs, after facebookresearch/mae.

    mae-train --workdir=/tmp/mae                                        # tiny, on the embedded photos
    mae-train --config=mae_flax/configs/mae.py:vit_b16 --workdir=gs://bucket/mae_b16 \
        --config.data.source=/data/imagenet/train

Variants: `tiny` (the default: about a minute on a 2-core CPU), `smoke` (the tests' seconds-long run),
`vit_b16` and `vit_l16` (the paper's encoders at 224px with its 8-block, 512-wide decoder, 800 epochs of
ImageNet at batch 4096), `vitpytorch` (vit-pytorch's README MAE). Any field can be overridden on the command
line: `--config.batch_size=1024 --config.mesh.fsdp=8`.
"""

import ml_collections
from ml_collections import config_dict

IMAGENET_TRAIN_IMAGES = 1_281_167


def get_config(variant='tiny'):
    config = ml_collections.ConfigDict()
    config.seed = 0

    # mae_flax.ViT keywords; num_classes only shapes an (unused) head, kept for vit-pytorch compatibility
    config.model = dict(
        image_size=32, patch_size=4, dim=96, depth=3, heads=3, dim_head=32, mlp_dim=192, pool='cls', channels=3
    )
    config.model.num_classes = 0
    # mae_flax.MAE keywords
    config.mae = dict(
        decoder_dim=64, decoder_depth=2, decoder_heads=4, decoder_dim_head=16, masking_ratio=0.75, norm_pix_loss=False
    )
    config.dtype = 'float32'  # compute dtype; parameters and optimizer state are always float32

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

    # 'default' (photographs shipped in scikit-image), a folder of jpg/png images, or a .npy/.npz array
    config.data = dict(source='default', crop_scale=(0.2, 1.0), flip=True, num_threads=4, prefetch=8)
    config.mesh = dict(data=-1, fsdp=1)  # -1: every device not taken by the other axis

    config.checkpoint = dict(every_steps=100, keep=3)
    config.log_every = 10
    config.image_every = 100
    config.num_eval_images = 8

    if variant == 'tiny':
        config.optim.base_lr = 1e-2  # a small model on little data takes a large step
        return config
    if variant == 'smoke':
        config.model.update(image_size=16, patch_size=4, dim=32, depth=1, heads=2, dim_head=16, mlp_dim=64)
        config.mae.update(decoder_dim=16, decoder_depth=1, decoder_heads=2, decoder_dim_head=8)
        config.update(total_steps=12, batch_size=16, log_every=1, image_every=6, num_eval_images=4)
        config.optim.update(base_lr=1e-2, warmup_steps=2)
        config.checkpoint.every_steps = 4
        return config
    if variant in ('vit_b16', 'vit_l16'):
        dim, depth, heads, mlp_dim = (768, 12, 12, 3072) if variant == 'vit_b16' else (1024, 24, 16, 4096)
        config.model.update(
            image_size=224, patch_size=16, dim=dim, depth=depth, heads=heads, dim_head=64, mlp_dim=mlp_dim
        )
        config.mae.update(decoder_dim=512, decoder_depth=8, decoder_heads=16, decoder_dim_head=32, norm_pix_loss=True)
        return _imagenet(config, epochs=800, warmup_epochs=40)
    if variant == 'vitpytorch':
        config.model.update(
            image_size=256, patch_size=32, dim=1024, depth=6, heads=8, dim_head=64, mlp_dim=2048, num_classes=1000
        )
        config.mae.update(decoder_dim=512, decoder_depth=6, decoder_heads=8, decoder_dim_head=64)
        return _imagenet(config, epochs=800, warmup_epochs=40)
    raise ValueError(f"unknown variant {variant!r}: expected 'tiny', 'smoke', 'vit_b16', 'vit_l16' or 'vitpytorch'")


def _imagenet(config, *, epochs, warmup_epochs):
    config.dtype = 'bfloat16'
    config.batch_size = 4096
    steps_per_epoch = IMAGENET_TRAIN_IMAGES // config.batch_size
    config.total_steps = epochs * steps_per_epoch
    config.optim.warmup_steps = warmup_epochs * steps_per_epoch
    config.data.source = config_dict.placeholder(str)  # required: --config.data.source=/path/to/imagenet/train
    config.data.num_threads = 32
    config.checkpoint.every_steps = 1000
    config.log_every = 50
    config.image_every = 5000
    return config

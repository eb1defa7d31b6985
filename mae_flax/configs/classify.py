"""Fine-tuning and linear-probing configs (mae-finetune, mae-linprobe), after facebookresearch/mae's
main_finetune.py and main_linprobe.py, and for the video family MCG-NJU/VideoMAE's run_class_finetuning.py.

    mae-finetune --workdir=runs/digits_ft --init_from=runs/digits_mae        # the embedded digits
    mae-linprobe --workdir=runs/digits_lp --init_from=runs/digits_mae
    mae-finetune --config=mae_flax/configs/classify.py:vit_b16 --init_from=mae_pretrain_vit_base.pth \
        --config.data.source=/data/imagenet --workdir=/mnt/shared/ft_b16          # train/<class>/*, val/<class>/*
    mae-finetune --config=mae_flax/configs/classify.py:video_motion --init_from=runs/video --workdir=runs/vft
    mae-finetune --config=mae_flax/configs/classify.py:videomae_b16_k400 --init_from=MCG-NJU/videomae-base \
        --config.data.source=/data/kinetics400 --workdir=/mnt/shared/vft_b16    # train/<class>/*.mp4, val/<class>/*

Variants: `digits` (fine-tuning, the default of mae-finetune), `digits_linprobe` (mae-linprobe's), `smoke`
(the tests'), `vit_b16`, `vit_l16`, `vit_h14` (facebookresearch/mae's ImageNet fine-tuning recipes: 100 / 50 / 50
epochs, layer decay 0.65 / 0.75 / 0.75, drop path 0.1 / 0.2 / 0.3) and `vit_b16_linprobe`, `vit_l16_linprobe`
(90 epochs of LARS at batch 16384). Of the video family (clips (b, t, h, w, c), a frame every data.frame_stride):
`video_motion` and `video_motion_linprobe` (video_tiny's model on the embedded motion clips, labeled_video: pan
left / right, zoom in / out, validated on photographs the training never sees), `video_smoke` (the tests') and
`videomae_b16_k400` (VideoMAE-B's Kinetics-400 fine-tuning: 100 epochs at batch 512, lr 1e-3 x 512 / 256, layer
decay 0.75, drop path 0.1, mixup 0.8 / cutmix 1.0, label smoothing 0.1; data.source required). config.model only
matters without --init_from (a random encoder, the baseline); with it, the checkpoint's description is the model.
"""

import ml_collections
from ml_collections import config_dict

from mae_flax.configs import mae, videomae

IMAGENET_TRAIN_IMAGES = 1_281_167
VARIANTS = (
    'digits',
    'digits_linprobe',
    'smoke',
    'smoke_linprobe',
    'vit_b16',
    'vit_l16',
    'vit_h14',
    'vit_b16_linprobe',
    'vit_l16_linprobe',
    'video_motion',
    'video_motion_linprobe',
    'video_smoke',
    'videomae_b16_k400',
)
# facebookresearch/mae's fine-tuning: (pretraining config, epochs, base lr, layer decay, drop path)
FINETUNE = {
    'vit_b16': ('mae_vit_b16', 100, 5e-4, 0.65, 0.1),
    'vit_l16': ('mae_vit_l16', 50, 1e-3, 0.75, 0.2),
    'vit_h14': ('mae_vit_h14', 50, 1e-3, 0.75, 0.3),
}


def get_config(variant='digits'):
    if variant not in VARIANTS:
        raise ValueError(f'unknown config variant {variant!r}: expected one of {", ".join(VARIANTS)}')
    linprobe = variant.endswith('_linprobe')
    config = ml_collections.ConfigDict()
    config.mode = 'linprobe' if linprobe else 'finetune'
    config.seed = 0
    config.model = mae.digits_model()  # the encoder when no --init_from gives one
    config.dtype = 'float32'
    config.scan_layers = True
    config.remat = 'dots_with_no_batch_dims_saveable'
    config.total_steps = 1000
    config.batch_size = 128
    config.grad_accum_steps = 1
    # num_classes 0: the data's; pool '': the family's default for the mode (official: 'avg' to fine-tune, 'token'
    # to probe; vit-pytorch: the encoder's own)
    # head_init_std 0: a zero head (fine-tuning); linear probing's LARS needs a nonzero one. image_size 0: the
    # encoder's; another (square) size resamples its position embeddings bicubically (fine-tuning at 448px)
    config.classifier = dict(
        num_classes=0, pool='', drop_path_rate=0.1, label_smoothing=0.1, head_init_std=0.0, image_size=0
    )
    config.mixup = dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, prob=1.0)  # timm's, batch mode
    # lr = base_lr * batch_size / 256; layer_decay 1: none; momentum: LARS's
    config.optim = dict(
        base_lr=1e-3,
        min_lr=1e-6,
        warmup_steps=50,
        b1=0.9,
        b2=0.999,
        weight_decay=0.05,
        layer_decay=0.75,
        momentum=0.9,
        grad_clip_norm=0.0,
    )
    # 'digits', a .npz (images, labels [, val_images, val_labels]) or an ImageFolder (train/<class>/*, val/<class>/*)
    config.data = dict(
        source='digits',
        val_fraction=0.2,  # of 'digits' and of a .npz without val_*: a fixed split
        crop_scale=(0.6, 1.0),
        flip=False,  # digits are not mirror-symmetric
        eval_crop_fraction=1.0,  # validation: shorter side to size / fraction, then the centre crop
        num_threads=4,
        prefetch=8,
        workers=0,
        draft=False,
    )
    config.mesh = dict(data=-1, fsdp=1, fsdp_min_size=2**16)
    config.checkpoint = dict(every_steps=250, keep=2)
    config.compilation_cache = 'workdir'
    config.log_every = 25
    config.eval_every = 250
    config.eval_batch_size = 512

    if linprobe:
        # facebookresearch/mae's linear probe: the encoder frozen, BatchNorm then the head, LARS, no weight decay,
        # no mixup, drop path or label smoothing
        config.classifier.update(drop_path_rate=0.0, label_smoothing=0.0, head_init_std=0.01)
        config.mixup.update(mixup_alpha=0.0, cutmix_alpha=0.0)
        config.optim.update(base_lr=0.1, weight_decay=0.0, layer_decay=1.0, min_lr=0.0)
    if variant.startswith('digits'):
        # 8x8 images: a mild crop, mixup off (a blend of two digits is rarely a digit, and 1,438 images
        # give few steps to learn it); measured in the README's digits table
        config.mixup.update(mixup_alpha=0.0, cutmix_alpha=0.0)
        if linprobe:
            # LARS scales each step by 0.001 x the weight's norm: facebookresearch/mae's lr of 6.4 (0.1 x 16384 /
            # 256) makes that a useful step; batch 128 under the same rule gives 0.05, and the probe barely moves
            # (44% after 500 steps at base_lr 4). Over 1,000 steps on these digits base_lr 8, 16 and 32 train
            # smoothly (largest training loss after warmup 1.03, 0.67, 0.93) and 64 does not (spikes to 9.2):
            # 16, the smoothest, is the default (measured on the MAE encoder of seed 0)
            config.optim.base_lr = 16.0
    elif variant.startswith('smoke'):
        config.model = mae.get_config('mae_smoke').model
        config.data.update(source='digits')
        config.model.encoder.update(img_size=8, patch_size=2, in_chans=1)
        config.model.update(pixel_mean=mae.DIGITS_MEAN, pixel_std=mae.DIGITS_STD)
        config.update(total_steps=8, batch_size=16, log_every=2, eval_every=4, eval_batch_size=128)
        config.checkpoint.every_steps = 4
    elif variant.startswith('video'):
        _video(config, variant, linprobe)
    else:
        _imagenet(config, variant.removesuffix('_linprobe'), linprobe)
    return config


def _imagenet(config, name, linprobe):
    pretraining, epochs, base_lr, layer_decay, drop_path = FINETUNE[name]
    config.model = mae.get_config(pretraining).model
    config.dtype = 'bfloat16'
    config.data.update(source=config_dict.placeholder(str), crop_scale=(0.08, 1.0), flip=True, eval_crop_fraction=0.875)
    config.data.update(workers=16, num_threads=2, prefetch=2, draft=True)
    if linprobe:
        # main_linprobe.py: 90 epochs, batch 16384, blr 0.1, warmup 10; crops as its RandomResizedCrop
        config.batch_size, epochs, warmup = 16384, 90, 10
    else:
        config.batch_size, warmup = 1024, 5
        config.optim.update(base_lr=base_lr, layer_decay=layer_decay)
        config.classifier.drop_path_rate = drop_path
    steps_per_epoch = IMAGENET_TRAIN_IMAGES // config.batch_size
    config.total_steps = epochs * steps_per_epoch
    config.optim.warmup_steps = warmup * steps_per_epoch
    config.eval_every = steps_per_epoch
    config.eval_batch_size = 1024
    config.checkpoint.every_steps = 1000
    config.log_every = 50


def _video(config, variant, linprobe):
    """The video family's variants: clips (b, t, h, w, c) of transformers' VideoMAEForVideoClassification, a frame
    every data.frame_stride."""
    if variant == 'videomae_b16_k400':
        _kinetics(config)
        return
    config.model = videomae.tiny_model()  # video_tiny's: its workdir is the --init_from
    # flips too: a flipped pan left is labelled a pan right (labeled_video.MIRRORED); mixup off (a blend of two
    # motions is neither, and a minute gives few steps to learn it)
    config.data.update(source='motion', frame_stride=2, crop_scale=(0.5, 1.0), flip=True)
    config.mixup.update(mixup_alpha=0.0, cutmix_alpha=0.0)
    config.update(total_steps=300, batch_size=16, log_every=25, eval_every=100, eval_batch_size=64)
    config.optim.update(warmup_steps=30)
    config.checkpoint.every_steps = 100
    # fine-tuning: after 300 steps from video_tiny's workdir base_lr 1e-2 gave 37.5% and 4e-2 64.1% (from scratch:
    # 65.6% and 81.3%; chance 25%); probing: the digits' LARS rate (see there), not tuned on clips
    config.optim.base_lr = 16.0 if linprobe else 4e-2
    if variant == 'video_smoke':
        config.model = videomae.get_config('video_smoke').model
        config.update(total_steps=8, batch_size=8, log_every=2, eval_every=4, eval_batch_size=64)
        config.checkpoint.every_steps = 4


def _kinetics(config):
    """MCG-NJU/VideoMAE's Kinetics-400 fine-tuning of VideoMAE-B, its 800-epoch model's
    (scripts/kinetics/videomae_vit_base_patch16_224_tubemasking_ratio_0.9_epoch_800/finetune.sh; the rest is
    run_class_finetuning.py's defaults). Not here: its RandAugment (rand-m7-n4-mstd0.5-inc1), random erasing (0.25) and
    its test of 5 clips x 3 crops a video; validation here is the central clip, centre-cropped."""
    config.model = videomae.get_config('videomae_b16').model  # 16 frames of 224px, tubelets 2 x 16 x 16
    config.dtype = 'bfloat16'
    # finetune.sh: --num_frames 16 --sampling_rate 4 --input_size 224; Kinetics' RandomResizedCrop (0.08, 1) and flip
    config.data.update(source=config_dict.placeholder(str), frame_stride=4, crop_scale=(0.08, 1.0), flip=True)
    config.data.update(workers=16, num_threads=2, prefetch=2)
    config.batch_size = 512  # finetune.sh: --batch_size 8 on 64 GPUs
    epochs, warmup = 100, 5  # finetune.sh: --epochs 100; run_class_finetuning.py: warmup_epochs 5
    # finetune.sh: --lr 1e-3 (x batch / 256, as here) --opt_betas 0.9 0.999 --weight_decay 0.05; the defaults:
    # layer_decay 0.75, min_lr 1e-6 x batch / 256 (here min_lr is the end value itself)
    config.optim.update(base_lr=1e-3, min_lr=1e-6 * 512 / 256, b1=0.9, b2=0.999, weight_decay=0.05, layer_decay=0.75)
    # the defaults: drop_path 0.1, smoothing 0.1, mixup 0.8, cutmix 1.0, mixup_prob 1.0, switch 0.5, mode 'batch'
    config.classifier.update(drop_path_rate=0.1, label_smoothing=0.1)
    config.mixup.update(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, prob=1.0)
    steps_per_epoch = videomae.KINETICS_TRAIN_VIDEOS // config.batch_size
    config.total_steps = epochs * steps_per_epoch
    config.optim.warmup_steps = warmup * steps_per_epoch
    config.update(eval_every=5 * steps_per_epoch, eval_batch_size=256, log_every=50)
    config.checkpoint.every_steps = 1000

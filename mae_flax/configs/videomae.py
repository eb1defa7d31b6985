"""Pretraining configs of the video family (VideoMAE: MCG-NJU/VideoMAE's PretrainVisionTransformer, transformers'
VideoMAEForPreTraining): tube masking of 90% of each frame's patches, tubelets of 2 frames, norm_pix_loss.

Variants: `video_tiny` (the embedded default, panned photographs: 75 s on a 2-core CPU), `video_smoke`
(the tests' seconds-long run) and `videomae_b16` (VideoMAE-B on Kinetics-400 as the paper: 16 frames every 4 at
224px, batch 512 (the paper's 64 GPUs x 8), 800 epochs of 240k videos, bf16; data.source required: a folder of video
files). Every image config's field applies; `data.frame_stride` is the frames between two a clip takes
(VideoMAE's sampling_rate: 4 on Kinetics, 2 on Something-Something).
"""

from mae_core import videomae
from mae_flax.configs import common

VARIANTS = ('video_tiny', 'video_smoke', 'videomae_b16')
KINETICS_TRAIN_VIDEOS = 240_436


def model(**encoder):
    """A video-family description: transformers' VideoMAEConfig keywords."""
    return dict(
        family=videomae.NAME,
        encoder=videomae.ENCODER_DEFAULTS | encoder,
        mae=dict(videomae.MAE_DEFAULTS),
        **common.PIXEL_STATS,
    )


def tiny_model():
    """8 frames of 32px in tubelets of 2 x 4 x 4 (4 x 8 x 8 = 256 tokens, 26 visible), a 3-block encoder 96 wide,
    a 2-block decoder 64 wide."""
    described = model(
        image_size=32, patch_size=4, num_frames=8, tubelet_size=2, hidden_size=96, num_hidden_layers=3,
        num_attention_heads=3, intermediate_size=192,
    )  # fmt: skip
    described['mae'].update(
        decoder_hidden_size=64,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=128,
    )
    return described


def get_config(variant='video_tiny'):
    if variant == 'video_tiny':
        config = common.base(tiny_model())
        config.data.frame_stride = 2
        config.optim.base_lr = 1e-2
        config.update(total_steps=600, batch_size=16, image_every=200, num_eval_images=4)
        config.checkpoint.every_steps = 200
        return config
    if variant == 'video_smoke':
        config = common.base(tiny_model())
        config.model.encoder.update(
            image_size=16, num_frames=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64,
        )  # fmt: skip
        config.model.mae.update(
            decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
            decoder_intermediate_size=32,
        )  # fmt: skip
        config.data.frame_stride = 2
        config = common.smoke(config)
        config.batch_size = 8
        return config
    if variant == 'videomae_b16':
        config = common.base(model(image_size=224, patch_size=16, num_frames=16, tubelet_size=2))
        config.data.frame_stride = 4
        config = common.regime(config, epochs=800, warmup_epochs=40, batch_size=512, dataset_size=KINETICS_TRAIN_VIDEOS)
        config.data.update(crop_scale=(0.66, 1.0))  # VideoMAE's multi-scale crop keeps most of the frame
        return config
    raise ValueError(f'unknown video config variant {variant!r}: expected one of {", ".join(VARIANTS)}')

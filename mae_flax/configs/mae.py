"""MAE pretraining configs, after facebookresearch/mae.

    mae-train --workdir=/tmp/mae                                        # photos: the default, on the embedded photos
    mae-train --config=mae_flax/configs/mae.py:vit_b16 --workdir=/mnt/shared/mae_b16 \
        --config.data.source=/data/imagenet/train

The default is `photos` (the official family's tiny model and the recipe that reconstructs photographs it never saw
better than a blur, ~2.5 minutes on a 2-core CPU). Variants of the vit-pytorch family: `tiny` (a minute), `smoke` (the tests'
seconds-long run), `vit_b16` and `vit_l16` (the paper's encoders at 224px with its 8-block, 512-wide decoder,
800 epochs of ImageNet at batch 4096), `vitpytorch` (vit-pytorch's README MAE). Of the official family
(facebookresearch/mae's MaskedAutoencoderViT, the architecture of the published checkpoints): `mae_vit_b16`,
`mae_vit_l16`, `mae_vit_h14` (its factories and recipe: norm_pix_loss, 800 epochs), `mae_tiny` and `mae_smoke`. Of
the video family (VideoMAE, configs/videomae.py): `video_tiny`, `video_smoke`, `videomae_b16`. Any field can be
overridden on the command line: `--config.batch_size=1024 --config.mesh.fsdp=8 --config.model.mae.norm_pix_loss=True`.

`config.model` is the model description (mae_core.ModelSpec): written as it is into the run's config.json and
beside every export, so every tool rebuilds the same model and feeds it the same pixel statistics.
"""

from mae_flax.configs import official, videomae, vit_pytorch
from mae_flax.configs.official import DIGITS_MEAN, DIGITS_STD, digits_model
from mae_flax.configs.official import FACTORIES as OFFICIAL_VARIANTS

# each variant's family module: its get_config(variant) reads top to bottom
FAMILY_OF = {variant: module for module in (vit_pytorch, official, videomae) for variant in module.VARIANTS}
VARIANTS = tuple(FAMILY_OF)

__all__ = ['DIGITS_MEAN', 'DIGITS_STD', 'OFFICIAL_VARIANTS', 'VARIANTS', 'digits_model', 'get_config']


def get_config(variant='photos'):
    if variant not in FAMILY_OF:
        raise ValueError(f'unknown config variant {variant!r}: expected one of {", ".join(VARIANTS)}')
    return FAMILY_OF[variant].get_config(variant)

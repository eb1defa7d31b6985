"""Pretraining configs of the official family (facebookresearch/mae's MaskedAutoencoderViT, the architecture of
the published checkpoints: fixed sin-cos position tables, a cls token in both halves).

Variants: `photos` (mae-train's default: the tiny model on the embedded photographs, the recipe that reconstructs
photographs it never saw better than a blur, benchmarks/heldout_recipes.py), `mae_vit_b16`, `mae_vit_l16`,
`mae_vit_h14` (its factories and recipe: norm_pix_loss, 800 epochs), `mae_tiny` and `mae_smoke` (the tiny models'
sizes), `digits` (the digits experiment's pretraining half).
"""

from mae_core import official
from mae_flax.configs import common

FACTORIES = {
    'mae_vit_b16': 'mae_vit_base_patch16',
    'mae_vit_l16': 'mae_vit_large_patch16',
    'mae_vit_h14': 'mae_vit_huge_patch14',
}
VARIANTS = ('photos', 'mae_tiny', 'mae_smoke', 'digits', *FACTORIES)
# scikit-learn's 8x8 handwritten digits (mae_flax.train.data.digits): gray, mean and std of their pixels in [0, 1]
DIGITS_MEAN, DIGITS_STD = (0.3053,), (0.3759,)


def model(**encoder):
    """An official-family MAE description: facebookresearch/mae's MaskedAutoencoderViT keywords."""
    return dict(
        family=official.NAME,
        encoder=official.ENCODER_DEFAULTS | encoder,
        mae=dict(official.MAE_DEFAULTS),
        **common.PIXEL_STATS,
    )


def tiny_model():
    """The tiny models' sizes in this family (which adds a cls token to both halves)."""
    described = model(img_size=32, patch_size=4, embed_dim=96, depth=3, num_heads=3, mlp_ratio=2.0)
    described['mae'].update(decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4, decoder_mlp_ratio=4.0)
    return described


def digits_model():
    """The digits' MAE: 2x2 patches of the 8x8 gray images (16 patches), a 4-block encoder 64 wide, a 2-block
    decoder 32 wide, half the patches masked (of 16 patches, 4 visible ones say too little)."""
    return dict(
        family=official.NAME,
        encoder=official.ENCODER_DEFAULTS
        | dict(img_size=8, patch_size=2, in_chans=1, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
        mae=official.MAE_DEFAULTS
        | dict(decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4, decoder_mlp_ratio=2.0, mask_ratio=0.5),
        pixel_mean=DIGITS_MEAN,
        pixel_std=DIGITS_STD,
    )


def get_config(variant='mae_tiny'):
    if variant == 'photos':
        # what moved the held-out figure (benchmarks/README.md): fixed sin-cos positions (this family), crops of
        # 0.5-10% of a photograph's area with its colour channels shuffled and inverted, so that ~14 photographs
        # cannot be memorised; then a finer grid: 36 px in 3 px patches (12 x 12) where 32 px in 4 px (8 x 8) stays
        # near 0.68 however long it trains; lr 3e-2. 1250 steps: 127-145 s on 2 CPU cores, one data thread (the
        # crops of the decoded photographs are cheap; more threads take cores from the step)
        config = common.base(tiny_model())
        config.model.encoder.update(img_size=36, patch_size=3)
        config.data.update(crop_scale=(0.005, 0.1), color_permute=1.0, color_invert=0.5, num_threads=1)
        config.optim.base_lr = 3e-2
        config.update(total_steps=1250, image_every=250)
        config.checkpoint.every_steps = 500
        return config
    if variant == 'mae_tiny':
        config = common.base(tiny_model())
        config.optim.base_lr = 1e-2  # a small model on little data takes a large step
        config.update(total_steps=1000, image_every=250)
        config.checkpoint.every_steps = 250
        return config
    if variant == 'mae_smoke':
        config = common.base(tiny_model())
        config.model.encoder.update(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2)
        config.model.mae.update(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
        return common.smoke(config)
    if variant == 'digits':
        # the pretraining half of the digits experiment (README): the train split of the embedded digits, no labels
        config = common.base(digits_model())
        config.data.update(source='digits', crop_scale=(0.6, 1.0), flip=False)
        config.optim.update(base_lr=5e-3, warmup_steps=100)
        config.update(total_steps=2000, batch_size=128, image_every=500, num_eval_images=16)
        config.checkpoint.every_steps = 500
        return config
    if variant in FACTORIES:
        # facebookresearch/mae's factories and its pretraining recipe (norm_pix_loss, 800 epochs, warmup 40)
        config = common.base(model(img_size=224, **official.FACTORIES[FACTORIES[variant]]))
        config.model.mae.norm_pix_loss = True
        return common.imagenet(config, epochs=800, warmup_epochs=40)
    raise ValueError(f'unknown official config variant {variant!r}: expected one of {", ".join(VARIANTS)}')

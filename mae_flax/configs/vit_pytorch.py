"""Pretraining configs of the vit-pytorch family (its ViT and MAE, learned position embeddings).

Variants: `tiny` (about a minute on a 2-core CPU, on the embedded photos), `smoke` (the tests' seconds-long run),
`vit_b16` and `vit_l16` (the paper's encoders at 224px with its 8-block, 512-wide decoder, 800 epochs of ImageNet
at batch 4096), `vitpytorch` (vit-pytorch's README MAE).
"""

from mae_core.spec import PAPER_DECODER, decode_variant
from mae_flax.configs import common

VARIANTS = ('tiny', 'smoke', 'vit_b16', 'vit_l16', 'vitpytorch')


def model(encoder, **mae):
    """A vit-pytorch family MAE description; num_classes only shapes an (unused) head, kept for compatibility."""
    return dict(
        family='vit_pytorch',
        encoder=dict(
            image_size=32, patch_size=4, num_classes=0, pool='cls', channels=3, layer_norm_eps=1e-5, **encoder
        ),
        mae=dict(masking_ratio=0.75, norm_pix_loss=False) | mae,
        **common.PIXEL_STATS,
    )


def tiny_model():
    """The tiny MAE: a 96-wide, 3-block encoder on 32px images of 4px patches, a 2-block decoder 64 wide."""
    return model(decode_variant('tiny'), decoder_dim=64, decoder_depth=2, decoder_heads=4, decoder_dim_head=16)


def get_config(variant='tiny'):
    config = common.base(tiny_model())
    if variant == 'tiny':
        config.optim.base_lr = 1e-2  # a small model on little data takes a large step
        # ~1 minute on 2 cores: by then the reconstructions carry each photo's colours and its coarse light and
        # dark layout (eval loss 1.77 -> 0.59); after 500 steps they were still colour blobs
        config.update(total_steps=1000, image_every=250)
        config.checkpoint.every_steps = 250
        return config
    if variant == 'smoke':
        config.model.encoder.update(image_size=16, patch_size=4, dim=32, depth=1, heads=2, dim_head=16, mlp_dim=64)
        config.model.mae.update(decoder_dim=16, decoder_depth=1, decoder_heads=2, decoder_dim_head=8)
        return common.smoke(config)
    if variant in ('vit_b16', 'vit_l16'):
        config.model.encoder.update(image_size=224, **decode_variant('B/16' if variant == 'vit_b16' else 'L/16'))
        config.model.mae.update(norm_pix_loss=True, **PAPER_DECODER)
        return common.imagenet(config, epochs=800, warmup_epochs=40)
    if variant == 'vitpytorch':  # its README's MAE
        config.model.encoder.update(
            image_size=256, patch_size=32, dim=1024, depth=6, heads=8, dim_head=64, mlp_dim=2048, num_classes=1000
        )
        config.model.mae.update(decoder_dim=512, decoder_depth=6, decoder_heads=8, decoder_dim_head=64)
        return common.imagenet(config, epochs=800, warmup_epochs=40)
    raise ValueError(f'unknown vit_pytorch config variant {variant!r}: expected one of {", ".join(VARIANTS)}')

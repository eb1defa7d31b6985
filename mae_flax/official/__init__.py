"""The official MAE family in Flax: facebookresearch/mae's MaskedAutoencoderViT, the architecture of every
published MAE checkpoint, loadable from facebookresearch/mae, timm and HuggingFace layouts and exported back."""

from mae_core import official as facts
from mae_flax.official import table
from mae_flax.official.infer import infer
from mae_flax.official.mae import (
    MaskedAutoencoderViT,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
)


def build(spec, *, rngs, dtype=None, scan_layers=False, remat='none'):
    """The MaskedAutoencoderViT a ModelSpec of this family describes."""
    return MaskedAutoencoderViT(
        **spec.encoder, **(spec.mae or {}), dtype=dtype, scan_layers=scan_layers, remat=remat, rngs=rngs
    )


def build_torch(spec):
    import mae_torch.official

    return mae_torch.official.build(spec)


def decays(path):
    """timm's add_weight_decay, as facebookresearch/mae's pretraining uses it: no decay for 1-D parameters (biases,
    LayerNorm scales); every other parameter, the (1, 1, D) cls and mask tokens included, is decayed. The fixed
    position embeddings are not parameters at all."""
    return getattr(path[-1], 'key', None) not in ('bias', 'scale')


def encoder_spec(spec):
    """This family keeps one class: an encoder's file is read into a MaskedAutoencoderViT whose decoder the
    description still sizes (freshly initialised)."""
    return spec


__all__ = [
    'MaskedAutoencoderViT',
    'build',
    'build_torch',
    'decays',
    'encoder_spec',
    'facts',
    'infer',
    'mae_vit_base_patch16',
    'mae_vit_huge_patch14',
    'mae_vit_large_patch16',
    'table',
]

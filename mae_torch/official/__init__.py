"""The official MAE family in torch: facebookresearch/mae's MaskedAutoencoderViT, without timm."""

from mae_torch.official.mae import (
    MaskedAutoencoderViT,
    VisionTransformer,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
    patchify,
    unpatchify,
)


def build(spec):
    """The MaskedAutoencoderViT a ModelSpec of this family describes (the decoder too for an encoder's spec)."""
    return MaskedAutoencoderViT(**spec.encoder, **(spec.mae or {}))


__all__ = [
    'MaskedAutoencoderViT',
    'VisionTransformer',
    'build',
    'mae_vit_base_patch16',
    'mae_vit_huge_patch14',
    'mae_vit_large_patch16',
    'patchify',
    'unpatchify',
]

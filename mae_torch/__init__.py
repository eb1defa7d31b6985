"""PyTorch MAE: a drop-in for vit-pytorch's ViT and MAE (same keywords, same state_dict), with its bugs fixed."""

from mae_core.contract import MAEOutput
from mae_torch import official, videomae, vit_pytorch
from mae_torch.masking import random_masking
from mae_torch.official import (
    MaskedAutoencoderViT,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
)
from mae_torch.patches import patchify, unpatchify
from mae_torch.vit_pytorch import MAE, ViT, reconstruction_loss

# one builder per family: ModelSpec -> model
BUILDERS = {'vit_pytorch': vit_pytorch.build, 'official': official.build, 'videomae': videomae.build}


def build(spec):
    """The mae_torch model (MAE, or encoder alone) that a mae_core.ModelSpec describes, freshly initialised."""
    return BUILDERS[spec.family](spec)


__all__ = [
    'MAE',
    'MAEOutput',
    'MaskedAutoencoderViT',
    'ViT',
    'build',
    'mae_vit_base_patch16',
    'mae_vit_huge_patch14',
    'mae_vit_large_patch16',
    'patchify',
    'random_masking',
    'reconstruction_loss',
    'unpatchify',
]

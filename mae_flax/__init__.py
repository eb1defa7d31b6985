"""Flax NNX MAE: the same function and parameters as mae_torch (and vit-pytorch), built to pretrain on TPU/GPU."""

from mae_core.contract import MAEOutput
from mae_core.spec import ModelSpec
from mae_flax.families import build
from mae_flax.masking import random_masking
from mae_flax.official import (
    MaskedAutoencoderViT,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
)
from mae_flax.patches import patchify, unpatchify
from mae_flax.vit_pytorch import MAE, ViT, reconstruction_loss

__all__ = [
    'MAE',
    'MAEOutput',
    'MaskedAutoencoderViT',
    'ModelSpec',
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

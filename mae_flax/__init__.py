"""Flax NNX MAE: the same function and parameters as mae_torch (and vit-pytorch), built to pretrain on TPU/GPU."""

from mae_flax.mae import MAE, MAEOutput, reconstruction_loss
from mae_flax.masking import num_masked_patches, random_masking
from mae_flax.patchify import patchify, unpatchify
from mae_flax.vit import ViT

__all__ = [
    'MAE',
    'MAEOutput',
    'ViT',
    'num_masked_patches',
    'patchify',
    'random_masking',
    'reconstruction_loss',
    'unpatchify',
]

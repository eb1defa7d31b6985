"""PyTorch MAE: a drop-in for vit-pytorch's ViT and MAE (same keywords, same state_dict), with its bugs fixed."""

from mae_torch.mae import MAE, MAEOutput, reconstruction_loss
from mae_torch.masking import num_masked_patches, random_masking
from mae_torch.patchify import patchify, unpatchify
from mae_torch.vit import ViT

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

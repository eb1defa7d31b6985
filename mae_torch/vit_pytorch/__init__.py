"""The vit-pytorch family in torch: vit-pytorch's ViT and MAE, a drop-in with its bugs fixed."""

from mae_torch.vit_pytorch.mae import MAE, reconstruction_loss
from mae_torch.vit_pytorch.vit import ViT


def build(spec):
    """The mae_torch model a ModelSpec of this family describes: an MAE, or a ViT when spec.mae is None."""
    encoder = ViT(**spec.encoder)
    return encoder if spec.mae is None else MAE(encoder=encoder, **spec.mae)


__all__ = ['MAE', 'ViT', 'build', 'reconstruction_loss']

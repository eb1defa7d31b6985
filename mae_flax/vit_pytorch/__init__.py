"""The vit-pytorch family in Flax: vit-pytorch's ViT and MAE, the same function and parameters as mae_torch's."""

from mae_core import vit_pytorch as facts
from mae_flax.vit_pytorch import table
from mae_flax.vit_pytorch.infer import infer
from mae_flax.vit_pytorch.mae import MAE, reconstruction_loss
from mae_flax.vit_pytorch.vit import ViT


def build(spec, *, rngs, dtype=None, scan_layers=False, remat='none'):
    """The mae_flax model a ModelSpec of this family describes: an MAE, or a ViT when spec.mae is None."""
    encoder = ViT(**spec.encoder, dtype=dtype, scan_layers=scan_layers, remat=remat, rngs=rngs)
    return encoder if spec.mae is None else MAE(encoder=encoder, **spec.mae, rngs=rngs)


def build_torch(spec):
    import mae_torch.vit_pytorch

    return mae_torch.vit_pytorch.build(spec)


def decays(path):
    """Weight decay applies to Linear kernels only: not to biases, LayerNorm scales and biases, position
    embeddings, the cls token or the mask token (vit-pytorch's MAE recipe as mae-train runs it)."""
    return getattr(path[-1], 'key', None) == 'kernel'


def encoder_spec(spec):
    """An encoder's file is a ViT's: no MAE keywords."""
    return spec.replace(mae=None)


__all__ = [
    'MAE',
    'ViT',
    'build',
    'build_torch',
    'decays',
    'encoder_spec',
    'facts',
    'infer',
    'reconstruction_loss',
    'table',
]

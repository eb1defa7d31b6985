"""Twin models with the same weights, and the inputs the parity suite feeds them."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import mae_flax
import mae_torch
from mae_flax.convert import load_torch_state_dict
from mae_torch.patchify import pair


@dataclasses.dataclass(frozen=True)
class Config:
    """A small MAE; every field is a vit-pytorch keyword. The defaults give a model that runs in milliseconds."""

    image_size: int | tuple = 32
    patch_size: int | tuple = 8
    dim: int = 48
    depth: int = 2
    heads: int = 3
    dim_head: int = 16
    mlp_dim: int = 96
    pool: str = 'cls'
    channels: int = 3
    num_classes: int = 0
    decoder_dim: int = 32
    decoder_depth: int = 2
    decoder_heads: int = 2
    decoder_dim_head: int = 16
    masking_ratio: float = 0.75
    norm_pix_loss: bool = False

    @property
    def vit_kwargs(self):
        names = (
            'image_size',
            'patch_size',
            'dim',
            'depth',
            'heads',
            'dim_head',
            'mlp_dim',
            'pool',
            'channels',
            'num_classes',
        )
        return {name: getattr(self, name) for name in names}

    @property
    def mae_kwargs(self):
        names = ('decoder_dim', 'decoder_depth', 'decoder_heads', 'decoder_dim_head', 'masking_ratio', 'norm_pix_loss')
        return {name: getattr(self, name) for name in names}

    @property
    def num_patches(self):
        (h, w), (p1, p2) = pair(self.image_size), pair(self.patch_size)
        return (h // p1) * (w // p2)


def torch_mae(config, seed=0):
    torch.manual_seed(seed)
    return mae_torch.MAE(encoder=mae_torch.ViT(**config.vit_kwargs), **config.mae_kwargs)


def flax_mae(config, seed=0, dtype=None):
    encoder = mae_flax.ViT(**config.vit_kwargs, dtype=dtype, rngs=nnx.Rngs(seed))
    return mae_flax.MAE(encoder=encoder, **config.mae_kwargs, rngs=nnx.Rngs(seed + 1))


def mae_pair(config, seed=0, dtype=None):
    """(mae_torch.MAE, mae_flax.MAE) holding the same weights: torch's init, converted."""
    torch_model = torch_mae(config, seed)
    flax_model = load_torch_state_dict(flax_mae(config, seed, dtype), torch_model.state_dict())
    return torch_model, flax_model


def vit_pair(config, seed=0):
    """(mae_torch.ViT, mae_flax.ViT) holding the same weights: torch's init, converted."""
    torch.manual_seed(seed)
    torch_vit = mae_torch.ViT(**config.vit_kwargs)
    return torch_vit, load_torch_state_dict(
        mae_flax.ViT(**config.vit_kwargs, rngs=nnx.Rngs(seed)), torch_vit.state_dict()
    )


def images(kind, config, batch=4, seed=0):
    """(b, c, h, w) float32 images. 'normal': standard normal. 'low_variance': 0.003 * randn, where a wrong
    LayerNorm epsilon shows. 'offset': 50 + 0.01 * randn, where a one-pass variance loses its digits."""
    generator = torch.Generator().manual_seed(seed)
    height, width = pair(config.image_size)
    x = torch.randn(batch, config.channels, height, width, generator=generator)
    scale, offset = {'normal': (1.0, 0.0), 'low_variance': (0.003, 0.0), 'offset': (0.01, 50.0)}[kind]
    return offset + scale * x


def noise(config, batch=4, seed=1):
    return torch.rand(batch, config.num_patches, generator=torch.Generator().manual_seed(seed))


def to_jax(x):
    """torch (b, c, h, w) images -> jax (b, h, w, c); any other tensor keeps its layout."""
    array = x.detach().cpu().numpy()
    return jnp.asarray(np.moveaxis(array, 1, -1) if array.ndim == 4 else array)


def to_numpy(x):
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)

"""Twin models with the same weights, and the inputs the parity suite feeds them."""

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import mae_flax
import mae_torch
from mae_core import ModelSpec, official, vit_pytorch
from mae_flax.convert import load_torch_state_dict

# a small MAE that runs in milliseconds
ENCODER = dict(image_size=32, patch_size=8, dim=48, depth=2, heads=3, dim_head=16, mlp_dim=96, pool='cls', channels=3)
DECODER = dict(decoder_dim=32, decoder_depth=2, decoder_heads=2, decoder_dim_head=16, masking_ratio=0.75)


OFFICIAL_ENCODER = dict(img_size=32, patch_size=8, in_chans=3, embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0)
OFFICIAL_DECODER = dict(decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=2, decoder_mlp_ratio=4.0)


def _spec(facts, encoder, decoder, changes):
    """A family's description: `changes` override any of its encoder or MAE keywords."""
    encoder = encoder | {name: value for name, value in changes.items() if name in facts.ENCODER_FIELDS}
    mae = decoder | {name: value for name, value in changes.items() if name in facts.MAE_FIELDS}
    unknown = set(changes) - set(encoder) - set(mae)
    if unknown:
        raise TypeError(f'not a {facts.NAME} keyword: {sorted(unknown)}')
    return ModelSpec(facts.NAME, encoder, mae)


def official_spec(**changes):
    """A small official-family (facebookresearch/mae) MAE description."""
    return _spec(official, OFFICIAL_ENCODER, OFFICIAL_DECODER, changes)


def small_spec(**changes):
    """A small vit-pytorch family MAE description."""
    return _spec(vit_pytorch, ENCODER, DECODER, changes)


def torch_mae(spec, seed=0):
    torch.manual_seed(seed)
    return mae_torch.build(spec)


def flax_mae(spec, seed=0, dtype=None):
    return mae_flax.build(spec, rngs=nnx.Rngs(seed), dtype=dtype)


def mae_pair(spec, seed=0, dtype=None):
    """(mae_torch model, mae_flax model) holding the same weights: torch's init, converted."""
    torch_model = torch_mae(spec, seed)
    flax_model = load_torch_state_dict(flax_mae(spec, seed, dtype), torch_model.state_dict())
    return torch_model, flax_model


def vit_pair(spec, seed=0):
    """(mae_torch encoder, mae_flax encoder) of `spec` holding the same weights: torch's init, converted."""
    return mae_pair(spec.replace(mae=None), seed)


def images(kind, config, batch=4, seed=0):
    """(b, c, h, w) float32 images. 'normal': standard normal. 'low_variance': 0.003 * randn, where a wrong
    LayerNorm epsilon shows. 'offset': 50 + 0.01 * randn, where a one-pass variance loses its digits."""
    generator = torch.Generator().manual_seed(seed)
    height, width = config.image_size
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

"""Twin models with the same weights, and the inputs the parity suite feeds them."""

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import mae_flax
import mae_torch
from mae_core import ModelSpec, official, videomae, vit_pytorch
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


# a small VideoMAE: 4 frames of 16 x 16 in tubelets of 2 x 4 x 4: 2 frame-groups of 16 patches, 32 tokens;
# mask_ratio 0.75 masks 12 patches a frame, 24 tokens
VIDEO_ENCODER = dict(image_size=16, patch_size=4, num_channels=3, num_frames=4, tubelet_size=2, hidden_size=32,
                     num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, use_mean_pooling=False)  # fmt: skip
VIDEO_DECODER = dict(decoder_hidden_size=16, decoder_num_hidden_layers=2, decoder_num_attention_heads=2,
                     decoder_intermediate_size=32, mask_ratio=0.75)  # fmt: skip


def video_spec(**changes):
    """A small video-family (VideoMAE) description."""
    return _spec(videomae, VIDEO_ENCODER, VIDEO_DECODER, changes)


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
    """(b, c, h, w) float32 images, or (b, t, c, h, w) clips for a video model. 'normal': standard normal.
    'low_variance': 0.003 * randn, where a wrong LayerNorm epsilon shows. 'offset': 50 + 0.01 * randn, where a
    one-pass variance loses its digits."""
    generator = torch.Generator().manual_seed(seed)
    height, width = config.image_size
    frames = () if config.num_frames is None else (config.num_frames,)
    x = torch.randn(batch, *frames, config.channels, height, width, generator=generator)
    scale, offset = {'normal': (1.0, 0.0), 'low_variance': (0.003, 0.0), 'offset': (0.01, 50.0)}[kind]
    return offset + scale * x


def noise(config, batch=4, seed=1):
    return torch.rand(batch, config.num_patches, generator=torch.Generator().manual_seed(seed))


def to_jax(x):
    """torch (b, c, h, w) images -> jax (b, h, w, c), (b, t, c, h, w) clips -> (b, t, h, w, c); any other tensor
    keeps its layout."""
    array = x.detach().cpu().numpy()
    return jnp.asarray(np.moveaxis(array, -3, -1) if array.ndim in (4, 5) else array)


def to_numpy(x):
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)

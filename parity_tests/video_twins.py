"""The video family's test models, shared by parity_tests/test_videomae.py (the function against transformers) and
test_videomae_files.py (the layouts and files): the cases, their inputs, and the three twins of each case built once.
"""

import functools

import jax.numpy as jnp
import numpy as np
import torch

import mae_torch
from mae_flax import families
from mae_flax.convert import load_torch_state_dict, to_torch_state_dict
from mae_flax.videomae import hf
from parity_tests.oracles import transformers
from parity_tests.pairs import video_spec

CASES = {
    'norm_pix': video_spec(),
    'pixel_loss': video_spec(norm_pix_loss=False),
    'no_qkv_bias_mean_pooling': video_spec(qkv_bias=False, use_mean_pooling=True),
    # transformers takes other channel counts' frames as they come; a 2 x 4 x 6 grid of tubelets of one frame
    'gray_non_square_tubelet1': video_spec(num_channels=1, image_size=(16, 24), num_frames=2, tubelet_size=1),
}


def videos(kind, spec, batch=2, seed=0):
    """(b, t, c, h, w) float32, transformers' layout; 'low_variance' and 'offset' as parity_tests.pairs.images."""
    encoder = spec.encoder
    height, width = spec.image_size
    shape = (batch, encoder['num_frames'], encoder['num_channels'], height, width)
    scale, offset = {'normal': (1.0, 0.0), 'low_variance': (0.003, 0.0), 'offset': (0.01, 50.0)}[kind]
    return offset + scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def to_jax(x):
    """torch (b, t, c, h, w) -> jax (b, t, h, w, c); any other tensor keeps its layout."""
    array = x.detach().numpy()
    return jnp.asarray(np.moveaxis(array, 2, -1) if array.ndim == 5 else array)


def random_mask(model, batch=2, seed=3):
    """A bool_masked_pos that is not a tube mask (transformers takes any), masking the model's count of tokens."""
    order = torch.rand(batch, model.seq_length, generator=torch.Generator().manual_seed(seed)).argsort(dim=1)
    mask = torch.zeros(batch, model.seq_length, dtype=torch.bool)
    return mask.scatter_(1, order[:, : model.num_masked_tokens], True)


def transformers_model(spec, state_dict, cls='VideoMAEForPreTraining', **config_changes):
    config = transformers().VideoMAEConfig(**(hf.config_from_spec(spec)[0] | config_changes))
    config._attn_implementation = 'eager'
    model = getattr(transformers(), cls)(config).eval()
    model.load_state_dict({key: torch.from_numpy(value) for key, value in state_dict.items()}, strict=True)
    return model


@functools.cache
def twins(case):
    """(mae_torch model, mae_flax model, transformers model) with the same weights, norms and biases randomised."""
    spec = CASES[case]
    torch.manual_seed(0)
    torch_model = mae_torch.build(spec)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in torch_model.named_parameters():
            if 'norm' in name or 'bias' in name:
                param.add_(0.5 * torch.randn(param.shape, generator=generator))
    flax_model = load_torch_state_dict(families.build_abstract(spec), torch_model.state_dict())
    return torch_model.eval(), flax_model, transformers_model(spec, to_torch_state_dict(flax_model, layout='hf5'))

"""bfloat16 compute: Flax `dtype=jnp.bfloat16` (float32 parameters) against torch autocast, on the same weights.

bfloat16 keeps 8 significant bits (epsilon 7.8e-3), and the backends round at different places (torch autocast
keeps LayerNorm and softmax in float32, Flax LayerNorm computes its statistics in float32 and returns bfloat16).
Observed on CPU: predictions <= 8.4e-3 of scale apart (about one bfloat16 ulp), losses <= 1.5e-4 relative.
Tolerances: 4 ulps on predictions, 5e-3 on losses. Strict float32 precision does not apply here.
"""

import jax.numpy as jnp
import pytest
import torch
from flax import nnx

from mae_flax.parity import scaled_error
from parity_tests.configs import CONFIGS
from parity_tests.pairs import images, mae_pair, noise, to_jax, to_numpy

PREDICTIONS, LOSS = 4 * 2**-7, 5e-3


@pytest.mark.parametrize('config_name', ['cls', 'mean', 'single_head', 'norm_pix_loss', 'official', 'videomae'])
def test_bfloat16_flax_matches_torch_autocast(config_name, devices):
    config = CONFIGS[config_name]
    torch_device = devices[1]
    torch_model, flax_model = mae_pair(config, dtype=jnp.bfloat16)
    img, masking_noise = images('normal', config), noise(config)
    with torch.no_grad(), torch.autocast(torch_device.type, dtype=torch.bfloat16):
        expected = torch_model.to(torch_device)(
            img.to(torch_device), noise=masking_noise.to(torch_device), return_outputs=True
        )
    actual = nnx.jit(lambda m, x, n: m(x, noise=n, return_outputs=True))(flax_model, to_jax(img), to_jax(masking_noise))
    assert actual.pred_pixel_values.dtype == jnp.bfloat16 and actual.loss.dtype == jnp.float32
    assert scaled_error(to_numpy(expected.pred_pixel_values), actual.pred_pixel_values) <= PREDICTIONS
    assert abs(float(actual.loss) - expected.loss.item()) <= LOSS * expected.loss.item()


def test_bfloat16_keeps_float32_parameters():
    _, flax_model = mae_pair(CONFIGS['cls'], dtype=jnp.bfloat16)
    dtypes = {variable[...].dtype for _, variable in nnx.to_flat_state(nnx.state(flax_model, nnx.Param))}
    assert dtypes == {jnp.dtype(jnp.float32)}


def test_bfloat16_gradients_are_float32_and_finite():
    config = CONFIGS['cls']
    _, flax_model = mae_pair(config, dtype=jnp.bfloat16)
    img, masking_noise = to_jax(images('normal', config)), to_jax(noise(config))
    grads = nnx.grad(lambda model: model(img, noise=masking_noise, return_outputs=True).loss)(flax_model)
    leaves = [variable[...] for _, variable in nnx.to_flat_state(grads)]
    assert all(leaf.dtype == jnp.float32 and bool(jnp.isfinite(leaf).all()) for leaf in leaves)

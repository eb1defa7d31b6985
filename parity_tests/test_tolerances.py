"""The tolerances are tight enough to catch the numerics traps between torch and JAX.

Each test puts one trap into the Flax model and checks that the stage comparison fails by more than 3x its
tolerance (measured on CPU: tanh GELU 5x, LayerNorm eps 1e-6 on low-variance images 2300x, one-pass variance on
offset images 15x; the faithful model stays below 0.2x). The loss alone, on standard-normal images, hides all three.
"""

import functools

import jax
import pytest
import torch
from flax import nnx

from parity_tests import tolerances
from parity_tests.configs import CONFIGS
from parity_tests.pairs import images, mae_pair, noise, to_jax, to_numpy

CONFIG = CONFIGS['cls']


def _worst_error(kind, corrupt):
    """The largest (scaled error / tolerance) over the compared stages and the predictions, between torch and a
    Flax model changed by `corrupt`; run eagerly, so no compiled function is reused. Above 1 fails parity."""
    torch_model, flax_model = mae_pair(CONFIG)
    corrupt(flax_model)
    img, masking_noise = images(kind, CONFIG), noise(CONFIG)
    with torch.no_grad():
        expected = torch_model(img, noise=masking_noise, return_outputs=True)
    actual = flax_model(to_jax(img), noise=to_jax(masking_noise), return_outputs=True)
    ratios = [
        tolerances.scaled_error(to_numpy(expected.intermediates[stage]), actual.intermediates[stage])
        / tolerances.STAGE[kind]
        for stage in ('patch_embedding', 'encoded_tokens', 'decoded_tokens')
    ]
    ratios.append(
        tolerances.scaled_error(to_numpy(expected.pred_pixel_values), actual.pred_pixel_values)
        / tolerances.PREDICTIONS[kind]
    )
    return max(ratios)


def _layer_norms(model):
    return [module for _, module in nnx.iter_modules(model) if isinstance(module, nnx.LayerNorm)]


def _set_on_layer_norms(name, value):
    def corrupt(model):
        for norm in _layer_norms(model):
            setattr(norm, name, value)

    return corrupt


@pytest.mark.parametrize('kind', ['normal', 'low_variance', 'offset'])
def test_the_faithful_model_passes(kind):
    assert _worst_error(kind, lambda model: None) <= 1


def test_tanh_gelu_is_caught(monkeypatch):
    exact_gelu = jax.nn.gelu
    monkeypatch.setattr(jax.nn, 'gelu', functools.partial(lambda x, approximate: exact_gelu(x, approximate=True)))
    assert _worst_error('normal', lambda model: None) > 3


def test_flax_default_layer_norm_epsilon_is_caught():
    # flax's default 1e-6 against torch's 1e-5: invisible on unit-variance inputs, large on low-variance ones
    assert _worst_error('low_variance', _set_on_layer_norms('epsilon', 1e-6)) > 3


def test_fast_variance_is_caught():
    # E[x^2] - E[x]^2 cancels catastrophically on inputs with a large mean
    assert _worst_error('offset', _set_on_layer_norms('use_fast_variance', True)) > 3


def test_every_layer_norm_is_torch_like():
    _, flax_model = mae_pair(CONFIG)
    norms = _layer_norms(flax_model)
    # patch embedding (2), two per block and a final one in the encoder and the decoder
    assert len(norms) == 2 + 2 * CONFIG.depth + 1 + 2 * CONFIG.decoder_depth + 1
    assert all(norm.epsilon == 1e-5 and not norm.use_fast_variance for norm in norms)

"""Gradients of every parameter (mapped through the converter's table) and of the input agree."""

import numpy as np
import pytest

from mae_flax.parity import flax_outputs, scaled_error, torch_outputs
from parity_tests.configs import CONFIGS
from parity_tests.pairs import images, mae_pair, noise, to_jax

# offset images condition every gradient like the forward pass (see tolerances.py): observed <= 1.5e-3 of scale
GRADIENTS = {'normal': 1e-5, 'offset': 1e-2}
CASES = [(config, 'normal') for config in CONFIGS] + [('cls', 'offset'), ('mean', 'offset')]


def _grads(config_name, kind, torch_device):
    """({torch key or 'input': torch's gradient}, the same from Flax), for the same weights, images and noise;
    parameters the loss never reaches (the encoder's cls_token in MAE) have no torch gradient: zeros."""
    config = CONFIGS[config_name]
    torch_model, flax_model = mae_pair(config)
    img, masking_noise = np.asarray(to_jax(images(kind, config))), noise(config).numpy()
    _, torch_grads = torch_outputs(torch_model, img, masking_noise, torch_device, grads=True)
    _, flax_grads = flax_outputs(flax_model, img, masking_noise, grads=True)
    return torch_grads, flax_grads


@pytest.mark.parametrize(('config_name', 'kind'), CASES, ids=[f'{c}-{k}' for c, k in CASES])
def test_parameter_and_input_gradients_match(config_name, kind, devices):
    torch_grads, flax_grads = _grads(config_name, kind, devices[1])
    errors = {}
    for key, expected in torch_grads.items():
        if expected.size and np.abs(expected).max() > 0:
            errors[key] = scaled_error(expected, flax_grads[key])
        else:
            np.testing.assert_array_equal(flax_grads[key], expected, err_msg=key)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= GRADIENTS[kind], f'{worst}: gradient error {errors[worst]:.2e} > {GRADIENTS[kind]:.0e}'
    assert len(errors) > 10 and 'input' in errors  # every non-trivial parameter was compared


def test_every_torch_parameter_has_a_flax_gradient():
    torch_model, _ = mae_pair(CONFIGS['cls'])
    _, flax_grads = _grads('cls', 'normal', 'cpu')
    assert {key for key, _ in torch_model.named_parameters()} <= set(flax_grads)

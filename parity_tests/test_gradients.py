"""Gradients of every parameter (mapped through the converter's table) and of the input agree."""

import numpy as np
import pytest

from parity_tests import tolerances
from parity_tests.configs import CONFIGS
from parity_tests.flax_grads import loss_and_grads
from parity_tests.pairs import images, mae_pair, noise, to_jax

# offset images condition every gradient like the forward pass (see tolerances.py): observed <= 1.5e-3 of scale
GRADIENTS = {'normal': 1e-5, 'offset': 1e-2}
CASES = [(config, 'normal') for config in CONFIGS] + [('cls', 'offset'), ('mean', 'offset')]


def _grads(config_name, kind, torch_device):
    config = CONFIGS[config_name]
    torch_model, flax_model = mae_pair(config)
    img, masking_noise = images(kind, config), noise(config)
    torch_img = img.to(torch_device).requires_grad_(True)
    torch_model.to(torch_device)(torch_img, noise=masking_noise.to(torch_device)).backward()
    _, flax_grads, flax_img_grad = loss_and_grads(flax_model, to_jax(img), to_jax(masking_noise))
    return torch_model.cpu(), torch_img.grad.cpu(), flax_grads, flax_img_grad


@pytest.mark.parametrize(('config_name', 'kind'), CASES, ids=[f'{c}-{k}' for c, k in CASES])
def test_parameter_and_input_gradients_match(config_name, kind, devices):
    torch_model, torch_img_grad, flax_grads, flax_img_grad = _grads(config_name, kind, devices[1])
    errors = {}
    for key, param in torch_model.named_parameters():
        # parameters the loss never reaches (the encoder's cls_token in MAE) have no torch gradient: zero in JAX
        expected = param.grad.numpy() if param.grad is not None else np.zeros(param.shape, np.float32)
        if expected.size and np.abs(expected).max() > 0:
            errors[key] = tolerances.scaled_error(expected, flax_grads[key])
        else:
            np.testing.assert_array_equal(flax_grads[key], expected, err_msg=key)
    errors['input'] = tolerances.scaled_error(np.moveaxis(torch_img_grad.numpy(), 1, -1), flax_img_grad)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= GRADIENTS[kind], f'{worst}: gradient error {errors[worst]:.2e} > {GRADIENTS[kind]:.0e}'
    assert len(errors) > 10  # every non-trivial parameter was compared


def test_every_torch_parameter_has_a_flax_gradient():
    torch_model, _, flax_grads, _ = _grads('cls', 'normal', 'cpu')
    assert {key for key, _ in torch_model.named_parameters()} <= set(flax_grads)

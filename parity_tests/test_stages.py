"""The two backends compute the same function, stage by stage, on fixed weights, images and masking noise."""

import functools

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from mae_flax.parity import scaled_error
from parity_tests import tolerances
from parity_tests.configs import CONFIGS, IMAGE_KINDS
from parity_tests.pairs import images, mae_pair, noise, to_jax, to_numpy

CASES = [(config, kind) for config in CONFIGS for kind in IMAGE_KINDS]
CASE_IDS = [f'{config}-{kind}' for config, kind in CASES]
STAGES = ('patch_embedding', 'encoded_tokens', 'decoder_input', 'decoded_tokens')


@functools.cache
def _outputs(config_name, kind, device_name, batch=4):
    """Both backends' outputs (MAEOutput), with the same weights, images and noise."""
    config = CONFIGS[config_name]
    torch_device = torch.device('cuda' if device_name == 'gpu' else 'cpu')
    torch_model, flax_model = mae_pair(config)
    img, masking_noise = images(kind, config, batch), noise(config, batch)
    with torch.no_grad():
        torch_out = torch_model.to(torch_device)(
            img.to(torch_device), noise=masking_noise.to(torch_device), return_outputs=True
        )
    flax_out = nnx.jit(lambda model, x, n: model(x, noise=n, return_outputs=True))(
        flax_model, to_jax(img), to_jax(masking_noise)
    )
    return torch_out, jax.device_get(flax_out)


@pytest.fixture(params=CASES, ids=CASE_IDS)
def case(request, devices):
    config, kind = request.param
    return kind, _outputs(config, kind, devices[0])


@pytest.mark.parametrize(
    'config_name', [name for name in CONFIGS if CONFIGS[name].num_frames is None], ids=lambda name: name
)
def test_patches_are_identical(config_name, devices):
    # the image families' patches and masked patches are copies of the input's pixels: bitwise
    torch_out, flax_out = _outputs(config_name, 'offset', devices[0])
    np.testing.assert_array_equal(to_numpy(torch_out.intermediates['patches']), flax_out.intermediates['patches'])
    np.testing.assert_array_equal(to_numpy(torch_out.masked_patches), flax_out.masked_patches)


def test_video_patches_are_identical_and_the_unnormalised_targets_within_an_ulp(devices):
    # VideoMAE's masked patches are the frames un-normalised (x * std + mean, transformers' targets): one rounding,
    # which XLA may fuse into a multiply-add and torch does not, so 1 float32 ulp (2**-23 relative) apart at most
    torch_out, flax_out = _outputs('videomae', 'offset', devices[0])
    np.testing.assert_array_equal(to_numpy(torch_out.intermediates['patches']), flax_out.intermediates['patches'])
    np.testing.assert_allclose(flax_out.masked_patches, to_numpy(torch_out.masked_patches), rtol=2**-23, atol=0)


def test_masks_are_identical(case):
    _, (torch_out, flax_out) = case
    np.testing.assert_array_equal(torch_out.masked_indices.cpu().numpy(), flax_out.masked_indices)
    np.testing.assert_array_equal(torch_out.unmasked_indices.cpu().numpy(), flax_out.unmasked_indices)


@pytest.mark.parametrize('stage', STAGES)
def test_stage_matches(case, stage):
    kind, (torch_out, flax_out) = case
    error = scaled_error(to_numpy(torch_out.intermediates[stage]), flax_out.intermediates[stage])
    assert error <= tolerances.STAGE[kind], f'{stage}: error {error:.2e} of scale > {tolerances.STAGE[kind]:.0e}'


def test_predictions_match(case):
    kind, (torch_out, flax_out) = case
    error = scaled_error(to_numpy(torch_out.pred_pixel_values), flax_out.pred_pixel_values)
    assert error <= tolerances.PREDICTIONS[kind], f'predictions: error {error:.2e} > {tolerances.PREDICTIONS[kind]:.0e}'


def test_loss_matches(case):
    kind, (torch_out, flax_out) = case
    np.testing.assert_allclose(float(flax_out.loss), float(torch_out.loss), rtol=tolerances.LOSS[kind], atol=0)


@pytest.mark.parametrize('config_name', ['cls', 'mean', 'non_square'])
def test_batch_of_one_matches(config_name, devices):
    torch_out, flax_out = _outputs(config_name, 'normal', devices[0], batch=1)
    assert torch_out.pred_pixel_values.shape[0] == 1
    np.testing.assert_array_equal(torch_out.masked_indices.cpu().numpy(), flax_out.masked_indices)
    assert scaled_error(to_numpy(torch_out.pred_pixel_values), flax_out.pred_pixel_values) <= 1e-5
    np.testing.assert_allclose(float(flax_out.loss), float(torch_out.loss), rtol=tolerances.LOSS['normal'])

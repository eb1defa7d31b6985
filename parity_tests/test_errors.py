"""Bad input gets a ValueError/TypeError that names what was expected and what came, in both backends.

Both raise from plain `if` checks, so `python -O` (which strips asserts) changes nothing.
"""

import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import mae_flax
import mae_torch
from parity_tests.pairs import flax_mae, small_spec, torch_mae

CONFIG = small_spec()


@pytest.fixture(scope='module')
def models():
    return torch_mae(CONFIG), flax_mae(CONFIG)


def _call(backend, models, img_shape, noise_shape=None):
    """Calls one backend's MAE with zeros of the given (torch-layout) shapes."""
    torch_model, flax_model = models
    if backend == 'torch':
        noise = None if noise_shape is None else torch.rand(noise_shape)
        return torch_model(torch.zeros(img_shape), noise=noise)
    flax_shape = (*img_shape[:1], *img_shape[2:], img_shape[1]) if len(img_shape) == 4 else img_shape
    noise = None if noise_shape is None else jnp.zeros(noise_shape)
    return flax_model(jnp.zeros(flax_shape), noise=noise)


BACKENDS = ['torch', 'flax']


@pytest.mark.parametrize(
    'img_shape',
    [(2, 3, 32, 24), (2, 3, 16, 32), (2, 1, 32, 32), (3, 32, 32)],
    ids=['width', 'height', 'channels', 'rank'],
)
def test_wrong_images_are_value_errors(models, img_shape):
    torch_model, flax_model = models
    with pytest.raises(
        ValueError,
        match=re.escape(
            f'expected images of shape (batch, 3, 32, 32) (batch, channels, height, width), got {img_shape}'
        ),
    ):
        torch_model(torch.zeros(img_shape))
    flax_shape = (img_shape[0], *img_shape[2:], img_shape[1]) if len(img_shape) == 4 else img_shape
    with pytest.raises(
        ValueError,
        match=re.escape(
            f'expected images of shape (batch, 32, 32, 3) (batch, height, width, channels), got {flax_shape}'
        ),
    ):
        flax_model(jnp.zeros(flax_shape))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('noise_shape', [(2, 15), (3, 16), (2,), (2, 16, 1)])
def test_noise_of_the_wrong_shape_is_a_value_error(backend, models, noise_shape):
    message = f'expected noise of shape (batch, num_patches) = (2, 16), got {noise_shape}'
    with pytest.raises(ValueError, match=re.escape(message)):
        _call(backend, models, (2, 3, 32, 32), noise_shape)


def test_integer_noise_is_a_type_error(models):
    torch_model, flax_model = models
    with pytest.raises(TypeError, match='expected floating point noise, got torch.int64'):
        torch_model(torch.zeros(2, 3, 32, 32), noise=torch.zeros(2, 16, dtype=torch.int64))
    with pytest.raises(TypeError, match='expected floating point noise, got int32'):
        flax_model(jnp.zeros((2, 32, 32, 3)), noise=jnp.zeros((2, 16), jnp.int32))


def test_images_that_are_not_arrays_are_type_errors(models):
    torch_model, flax_model = models
    with pytest.raises(TypeError, match='expected a torch.Tensor image batch, got list'):
        torch_model([[0.0]])
    with pytest.raises(TypeError, match='expected a jax or numpy array image batch, got list'):
        flax_model([[0.0]])


@pytest.mark.parametrize('masking_ratio', [0, 1, 1.5, -0.25])
def test_masking_ratio_outside_zero_one_is_a_value_error(masking_ratio):
    message = f'masking_ratio must be strictly between 0 and 1, got {masking_ratio}'
    with pytest.raises(ValueError, match=message):
        mae_torch.MAE(encoder=mae_torch.ViT(**CONFIG.encoder), decoder_dim=32, masking_ratio=masking_ratio)
    with pytest.raises(ValueError, match=message):
        mae_flax.MAE(
            encoder=mae_flax.ViT(**CONFIG.encoder, rngs=nnx.Rngs(0)),
            decoder_dim=32,
            masking_ratio=masking_ratio,
            rngs=nnx.Rngs(0),
        )


def test_a_ratio_that_masks_no_patch_is_a_value_error():
    # int(0.05 * 16) == 0: upstream would return the NaN mean of an empty loss
    with pytest.raises(ValueError, match='masking_ratio 0.05 masks 0 of 16 patches'):
        mae_torch.MAE(encoder=mae_torch.ViT(**CONFIG.encoder), decoder_dim=32, masking_ratio=0.05)
    with pytest.raises(ValueError, match='masking_ratio 0.05 masks 0 of 16 patches'):
        mae_flax.MAE(
            encoder=mae_flax.ViT(**CONFIG.encoder, rngs=nnx.Rngs(0)),
            decoder_dim=32,
            masking_ratio=0.05,
            rngs=nnx.Rngs(0),
        )


@pytest.mark.parametrize(
    ('overrides', 'message'),
    [
        (dict(image_size=30), r'image_size \(30, 30\) must be divisible by patch_size \(8, 8\)'),
        (dict(image_size=(32, 20)), r'image_size \(32, 20\) must be divisible by patch_size \(8, 8\)'),
        (dict(pool='max'), "pool must be 'cls' \\(cls token\\) or 'mean' \\(mean pooling\\), got 'max'"),
    ],
)
def test_bad_vit_hyperparameters_are_value_errors(overrides, message):
    kwargs = {**CONFIG.encoder, **overrides}
    with pytest.raises(ValueError, match=message):
        mae_torch.ViT(**kwargs)
    with pytest.raises(ValueError, match=message):
        mae_flax.ViT(**kwargs, rngs=nnx.Rngs(0))


@pytest.mark.parametrize('backend', ['torch', 'flax'])
def test_patchify_rejects_sizes_not_divisible_by_the_patch(backend):
    module = mae_torch if backend == 'torch' else mae_flax
    with pytest.raises(ValueError, match='height divisible by 8 and width by 8'):
        module.patchify(np.zeros((1, 30, 32, 3)) if backend == 'flax' else torch.zeros(1, 3, 30, 32), 8)
    with pytest.raises(ValueError, match=r'expected patches of shape \(batch, 16, 192\)'):
        module.unpatchify(np.zeros((1, 15, 192)) if backend == 'flax' else torch.zeros(1, 15, 192), 32, 8)


def test_vit_forward_checks_images_too(models):
    torch_model, flax_model = models
    with pytest.raises(ValueError, match='expected images of shape'):
        torch_model.encoder(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match='expected images of shape'):
        flax_model.encoder(jnp.zeros((1, 3, 32, 32)))


@pytest.mark.parametrize('dtype', ['uint8', 'int32', 'bool'])
def test_integer_and_bool_images_are_type_errors_in_both(models, dtype):
    # uint8 pixels of 200 would give a loss of ~40,000: the model takes standardised float pixels
    torch_model, flax_model = models
    with pytest.raises(TypeError, match=f'expected floating point images .*got torch.{dtype}'):
        torch_model(torch.zeros(2, 3, 32, 32, dtype=getattr(torch, dtype)))
    with pytest.raises(TypeError, match=f'expected floating point images .*got {dtype}'):
        flax_model(np.zeros((2, 32, 32, 3), dtype))


def test_an_empty_batch_is_a_value_error_in_both(models):
    torch_model, flax_model = models
    with pytest.raises(ValueError, match='expected at least one image, got an empty batch'):
        torch_model(torch.zeros(0, 3, 32, 32))
    with pytest.raises(ValueError, match='expected at least one image, got an empty batch'):
        flax_model(np.zeros((0, 32, 32, 3), np.float32))


def test_noise_of_another_kind_is_a_type_error_in_both(models):
    torch_model, flax_model = models
    images = torch.zeros(2, 3, 32, 32), np.zeros((2, 32, 32, 3), np.float32)
    for noise in ([[0.5] * 16] * 2, np.random.rand(2, 16).astype(np.float32)):
        with pytest.raises(TypeError, match=r'expected noise as a torch.Tensor of shape \(2, 16\)'):
            torch_model(images[0], noise=noise)
    for noise in ([[0.5] * 16] * 2, torch.rand(2, 16)):
        with pytest.raises(TypeError, match=r'expected noise as a jax or numpy array of shape \(2, 16\)'):
            flax_model(images[1], noise=noise)

"""The pieces both backends share by convention: patch layout, masking, the noise draw, and the ViT itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from einops.layers.torch import Rearrange
from flax import nnx

import mae_flax
import mae_torch
from mae_core.fields import pair
from mae_core.masking import VIT_PYTORCH, MaskingConvention
from parity_tests.pairs import flax_mae, small_spec, to_jax, vit_pair


@pytest.mark.parametrize(('image_size', 'patch_size', 'channels'), [(32, 8, 3), ((32, 48), (8, 16), 1)])
def test_patch_layout_is_vit_pytorch_s_and_the_same_in_both(image_size, patch_size, channels):
    (h, w), (p1, p2) = pair(image_size), pair(patch_size)
    img = torch.randn(2, channels, h, w)
    vit_pytorch_layout = Rearrange('b c (h p1) (w p2) -> b (h w) (p1 p2 c)', p1=p1, p2=p2)(img)
    torch.testing.assert_close(mae_torch.patchify(img, patch_size), vit_pytorch_layout, rtol=0, atol=0)
    np.testing.assert_array_equal(np.asarray(mae_flax.patchify(to_jax(img), patch_size)), vit_pytorch_layout.numpy())


@pytest.mark.parametrize('backend', ['torch', 'flax'])
def test_unpatchify_inverts_patchify(backend):
    img = np.random.default_rng(0).normal(size=(2, 32, 48, 3)).astype(np.float32)
    if backend == 'torch':
        x = torch.from_numpy(img).permute(0, 3, 1, 2)
        torch.testing.assert_close(mae_torch.unpatchify(mae_torch.patchify(x, (8, 16)), (32, 48), (8, 16), 3), x)
    else:
        x = jnp.asarray(img)
        np.testing.assert_array_equal(mae_flax.unpatchify(mae_flax.patchify(x, (8, 16)), (32, 48), (8, 16), 3), x)


NOISE = np.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.4, 0.6]], dtype=np.float32)


def _both_backends(noise, num_masked, convention):
    return (
        mae_torch.random_masking(torch.from_numpy(noise), num_masked, convention),
        mae_flax.random_masking(jnp.asarray(noise), num_masked, convention),
    )


def test_vit_pytorch_masks_the_smallest_noise():
    for masked, unmasked in _both_backends(NOISE, 3, VIT_PYTORCH):
        np.testing.assert_array_equal(np.asarray(masked), [[1, 3, 2], [0, 2, 3]])
        np.testing.assert_array_equal(np.asarray(unmasked), [[0], [1]])


def test_a_keep_smallest_convention_keeps_the_smallest_noise():
    # facebookresearch/mae's: argsort, keep the first len_keep, mask the rest in noise order
    keeps_smallest = MaskingConvention(masks_smallest=False, rounds_masked=False)
    for masked, unmasked in _both_backends(NOISE, 3, keeps_smallest):
        np.testing.assert_array_equal(np.asarray(unmasked), [[1], [0]])
        np.testing.assert_array_equal(np.asarray(masked), [[3, 2, 0], [2, 3, 1]])


@pytest.mark.parametrize(
    ('ratio', 'num_patches', 'expected'),
    [(0.75, 196, 147), (0.75, 16, 12), (0.9, 16, 14), (0.33, 10, 3), (0.75, 10, 7)],
)
def test_vit_pytorch_masks_int_of_ratio_times_patches(ratio, num_patches, expected):
    assert VIT_PYTORCH.num_masked(ratio, num_patches) == expected
    assert (
        small_spec(image_size=8 * num_patches, patch_size=(8, 8 * num_patches), masking_ratio=ratio).num_masked
        == expected
    )


@pytest.mark.parametrize(('ratio', 'num_patches', 'expected'), [(0.75, 10, 8), (0.75, 196, 147), (0.9, 16, 15)])
def test_a_keep_rounding_convention_keeps_int_of_one_minus_ratio_times_patches(ratio, num_patches, expected):
    # vit-pytorch would mask 7, 147 and 14: the conventions differ whenever ratio * n is not whole
    assert MaskingConvention(masks_smallest=False, rounds_masked=False).num_masked(ratio, num_patches) == expected


def test_flax_draws_fresh_noise_from_its_own_stream():
    config = small_spec()
    model = flax_mae(config)
    img = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    first, second = (model(img, return_outputs=True).masked_indices for _ in range(2))
    assert not np.array_equal(first, second)
    # the same stream seed replays the same masks
    replay = flax_mae(config)
    np.testing.assert_array_equal(replay(img, return_outputs=True).masked_indices, first)


def test_flax_noise_stream_advances_under_jit():
    model = flax_mae(small_spec())
    img = jnp.zeros((2, 32, 32, 3))
    forward = nnx.jit(lambda model, x: model(x, return_outputs=True).masked_indices)
    assert not np.array_equal(forward(model, img), forward(model, img))


@pytest.mark.parametrize('pool', ['cls', 'mean'])
@pytest.mark.parametrize('num_classes', [0, 10])
def test_vit_outputs_match(pool, num_classes):
    torch_vit, flax_vit = vit_pair(small_spec(pool=pool, num_classes=num_classes))
    img = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = torch_vit(img).numpy()
    actual = np.asarray(jax.jit(lambda x: flax_vit(x))(to_jax(img)))
    assert actual.shape == expected.shape == ((3, 10) if num_classes else (3, 16 + (pool == 'cls'), 48))
    # float32 through two blocks: observed <= 1e-6
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_flax_init_follows_torch_s_distributions():
    # a Flax model trained from scratch starts like a torch one: Linear U(+-1/sqrt(fan_in)), embeddings N(0, 1)
    model = flax_mae(small_spec(dim=256, mlp_dim=1024))
    kernel = np.asarray(model.encoder.transformer.layers[0][1].hidden.kernel[...])
    bound = 256**-0.5
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.95 * bound
    assert abs(np.asarray(model.decoder_pos_emb[...]).std() - 1) < 0.1

"""The training step's backward pass moves tokens with gathers only: the transpose of a gather through a
permutation is a gather through the inverse permutation (mae_flax.masking.permute_tokens), where autodiff would
scatter-add into zeros and sort the indices (3 scatters and 3 sorts per MAE step before; slow on TPUs)."""

import jax
import numpy as np
import pytest
from flax import nnx

import mae_flax
from parity_tests.configs import CONFIGS
from parity_tests.pairs import images, noise, to_jax


@pytest.mark.parametrize('config_name', ['cls', 'official'])
def test_the_gradient_of_the_loss_has_no_scatter_and_only_the_forward_sorts(config_name):
    spec = CONFIGS[config_name]
    model = mae_flax.build(spec, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    img, masking_noise = to_jax(images('normal', spec)), to_jax(noise(spec))

    def loss(params, img):
        return nnx.merge(graphdef, params, rest)(img, noise=masking_noise, return_outputs=True).loss

    forward = jax.jit(loss).lower(params, img).as_text()
    backward = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, img).as_text()
    assert 'scatter' not in backward
    # the forward's two argsorts (the noise, then its inverse): the backward adds none
    assert backward.count('stablehlo.sort') == forward.count('stablehlo.sort') == 2


def test_permute_tokens_gradient_is_the_inverse_gather():
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((2, 5, 3)).astype(np.float32)
    order = np.stack([rng.permutation(5) for _ in range(2)])
    inverse = np.argsort(order, axis=-1)
    weights = rng.standard_normal((2, 5, 3)).astype(np.float32)

    def ours(x):
        return (mae_flax.masking.permute_tokens(x, order, inverse) * weights).sum()

    def autodiff(x):  # what jax would do: a scatter-add of the cotangent
        return (jax.numpy.take_along_axis(x, order[..., None], axis=1) * weights).sum()

    np.testing.assert_array_equal(jax.grad(ours)(tokens), jax.grad(autodiff)(tokens))

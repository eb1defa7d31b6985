"""Random masking: argsort the noise, then the family's convention (mae_core.masking) says which end is masked."""

import jax
import jax.numpy as jnp
import numpy as np

from mae_core.masking import VIT_PYTORCH


def check_noise(noise, batch, num_patches):
    if not isinstance(noise, jax.Array | np.ndarray):
        raise TypeError(
            f'expected noise as a jax or numpy array of shape ({batch}, {num_patches}), got {type(noise).__name__}'
        )
    if tuple(noise.shape) != (batch, num_patches):
        raise ValueError(
            f'expected noise of shape (batch, num_patches) = ({batch}, {num_patches}), got {tuple(noise.shape)}'
        )
    if not jnp.issubdtype(noise.dtype, jnp.floating):
        raise TypeError(f'expected floating point noise, got {noise.dtype}')


def random_masking(noise, num_masked, convention=VIT_PYTORCH):
    """noise (b, n) -> (masked_indices (b, num_masked), unmasked_indices (b, n - num_masked))."""
    return convention.split(jnp.argsort(noise, axis=-1), num_masked)  # argsort: (b, n)


def gather_tokens(tokens, indices):
    """tokens (b, n, d), indices (b, k) -> (b, k, d)."""
    return jnp.take_along_axis(tokens, indices[..., None], axis=1)


@jax.custom_vjp
def permute_tokens(tokens, order, inverse):
    """tokens (b, n, d) in `order` (b, n), a permutation of the n positions whose inverse is `inverse`:
    out[:, i] = tokens[:, order[:, i]]. Its gradient is the same gather through `inverse`, where the autodiff
    transpose of a gather would scatter-add (and sort its indices): a permutation's transpose is its inverse."""
    return gather_tokens(tokens, order)


def _permute_forward(tokens, order, inverse):
    return gather_tokens(tokens, order), (order, inverse)


def _permute_backward(residuals, cotangent):
    _, inverse = residuals
    return gather_tokens(cotangent, inverse), None, None


permute_tokens.defvjp(_permute_forward, _permute_backward)

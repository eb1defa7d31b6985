"""Random masking with vit-pytorch's convention: argsort the noise, the smallest `num_masked` are masked."""

import jax.numpy as jnp


def num_masked_patches(masking_ratio, num_patches):
    """How many of `num_patches` are masked: `int(masking_ratio * num_patches)`, as vit-pytorch."""
    return int(masking_ratio * num_patches)


def check_masking_ratio(masking_ratio, num_patches):
    if not 0 < masking_ratio < 1:
        raise ValueError(f'masking_ratio must be strictly between 0 and 1, got {masking_ratio}')
    num_masked = num_masked_patches(masking_ratio, num_patches)
    if not 0 < num_masked < num_patches:
        raise ValueError(
            f'masking_ratio {masking_ratio} masks {num_masked} of {num_patches} patches: '
            'at least one patch must be masked and one kept'
        )


def check_noise(noise, batch, num_patches):
    if tuple(noise.shape) != (batch, num_patches):
        raise ValueError(
            f'expected noise of shape (batch, num_patches) = ({batch}, {num_patches}), got {tuple(noise.shape)}'
        )
    if not jnp.issubdtype(noise.dtype, jnp.floating):
        raise TypeError(f'expected floating point noise, got {noise.dtype}')


def random_masking(noise, num_masked):
    """noise (b, n) -> (masked_indices (b, num_masked), unmasked_indices (b, n - num_masked))."""
    rand_indices = jnp.argsort(noise, axis=-1)  # (b, n)
    return rand_indices[:, :num_masked], rand_indices[:, num_masked:]

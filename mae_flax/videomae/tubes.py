"""VideoMAE's videos as tubelets, in Flax: the checks of a batch of videos and of a given mask, tube masking (one
spatial mask repeated over every tubelet), tubelets <-> frames, and the loss targets (the frames un-normalised with
transformers' constants, or each tubelet normalised over tubelet x patch x patch per channel with the unbiased
variance, as transformers orders it)."""

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange

from mae_core.fields import pair
from mae_core.videomae import MASKING, NORM_PIX_EPS, TARGET_MEAN, TARGET_STD
from mae_flax.patches import check_batch


def check_video(videos, *, channels, num_frames, image_size):
    """Raises unless `videos` is a non-empty floating (b, num_frames, height, width, channels) batch."""
    check_batch(videos, (num_frames, *pair(image_size), channels), 'frames, height, width, channels', 'video')


def check_bool_masked_pos(bool_masked_pos, batch, num_tokens, traced_count):
    """(mask as a jax bool array, masked tokens per video) for transformers' `bool_masked_pos` (b, tokens), True =
    masked. Every video must mask as many tokens (transformers' rule): the count sets the shapes. Under jit the count
    cannot be read, and is taken to be `traced_count` (the model's own, from mask_ratio); the model's loss is NaN if
    the mask's count is another."""
    if not isinstance(bool_masked_pos, jax.Array | np.ndarray):
        raise TypeError(f'expected bool_masked_pos as a jax or numpy array, got {type(bool_masked_pos).__name__}')
    if tuple(bool_masked_pos.shape) != (batch, num_tokens):
        raise ValueError(
            f'expected bool_masked_pos of shape (batch, tokens) = ({batch}, {num_tokens}), '
            f'got {tuple(bool_masked_pos.shape)}'
        )
    if bool_masked_pos.dtype != bool:
        raise TypeError(f'expected a boolean bool_masked_pos (True = masked), got {bool_masked_pos.dtype}')
    try:
        counts = np.asarray(bool_masked_pos).sum(axis=1)
    except jax.errors.TracerArrayConversionError:
        return bool_masked_pos, traced_count
    if (counts != counts[0]).any():
        raise ValueError(f'every video must mask the same number of tokens, got {sorted(set(counts.tolist()))}')
    if not 0 < counts[0] < num_tokens:
        raise ValueError(f'bool_masked_pos masks {counts[0]} of {num_tokens} tokens: mask at least one, keep one')
    return jnp.asarray(bool_masked_pos), int(counts[0])


def tube_mask(noise, num_masked, frame_groups):
    """noise (b, n) over one frame's patches -> bool_masked_pos (b, frame_groups * n): the `num_masked` patches of
    largest noise masked, the same ones in every frame-group (tube masking)."""
    masked, _ = MASKING.split(jnp.argsort(noise, axis=-1), num_masked)  # (b, num_masked)
    rows = jnp.arange(noise.shape[0])[:, None]
    per_frame = jnp.zeros(noise.shape, bool).at[rows, masked].set(True)  # (b, n)
    return jnp.tile(per_frame, (1, frame_groups))


def patchify(videos, tubelet_size, patch_size):
    """(b, t, h, w, c) -> (b, (t/pt * h/p * w/p), (pt p q c)): tokens in (t, h, w) order, as the Conv3d's."""
    return rearrange(
        videos, 'b (t pt) (h p) (w q) c -> b (t h w) (pt p q c)', pt=tubelet_size, p=patch_size, q=patch_size
    )


def unpatchify(patches, grid_size, tubelet_size, patch_size, channels):
    """(b, n, (pt p q c)) -> (b, t, h, w, c); the inverse of `patchify` for a (t, h, w) grid of tubelets."""
    frames, rows, columns = grid_size
    return rearrange(
        patches,
        'b (t h w) (pt p q c) -> b (t pt) (h p) (w q) c',
        t=frames,
        h=rows,
        w=columns,
        pt=tubelet_size,
        p=patch_size,
        q=patch_size,
        c=channels,
    )


def loss_targets(videos, tubelet_size, patch_size, norm_pix_loss):
    """(targets, pixels), both (b, n, pt*p*q*c) float32 and outside the gradient (transformers computes them under
    no_grad): the frames un-normalised with transformers' constants (3 channels; others as they come), and with
    norm_pix_loss each tubelet's channel standardised: (x - mean) / (unbiased std + 1e-6)."""
    frames = videos.astype(jnp.float32)
    if frames.shape[-1] == 3:
        frames = frames * np.float32(TARGET_STD) + np.float32(TARGET_MEAN)
    pixels = patchify(frames, tubelet_size, patch_size)
    targets = pixels
    if norm_pix_loss:
        values = rearrange(
            frames, 'b (t pt) (h p) (w q) c -> b (t h w) (pt p q) c', pt=tubelet_size, p=patch_size, q=patch_size
        )
        mean, var = values.mean(axis=-2, keepdims=True), values.var(axis=-2, keepdims=True, ddof=1)
        targets = rearrange((values - mean) / (jnp.sqrt(var) + NORM_PIX_EPS), 'b n s c -> b n (s c)')
    return jax.lax.stop_gradient(targets), jax.lax.stop_gradient(pixels)

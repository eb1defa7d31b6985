"""Mixup and cutmix for fine-tuning: timm's Mixup in 'batch' mode, written in jnp to run inside the jitted step
(neither optax nor numpy has it)."""

import jax
import jax.numpy as jnp


def mix(key, images, targets, mixup_config):
    """timm's Mixup in 'batch' mode: one lam for the batch, drawn from Beta(alpha, alpha); with probability
    `switch_prob` (when both are on) a cutmix box instead of a blend, lam then being the area left; each image is
    mixed with the batch's reverse, its target likewise. Applied with probability `prob`. Clips (b, t, h, w, c) are
    mixed as MCG-NJU/VideoMAE's mixup.py mixes them: one lam, and one box for every frame of every clip."""
    mixup_alpha, cutmix_alpha = mixup_config.mixup_alpha, mixup_config.cutmix_alpha
    if mixup_alpha <= 0 and cutmix_alpha <= 0 or mixup_config.prob <= 0:
        return images, targets
    apply_key, switch_key, lam_key, box_key = jax.random.split(key, 4)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = jax.random.bernoulli(switch_key, mixup_config.switch_prob)
    else:
        use_cutmix = jnp.asarray(cutmix_alpha > 0)
    alpha = jnp.where(use_cutmix, max(cutmix_alpha, 1e-6), max(mixup_alpha, 1e-6))
    lam = jax.random.beta(lam_key, alpha, alpha)
    applied = jax.random.bernoulli(apply_key, mixup_config.prob)
    height, width = images.shape[-3:-1]  # images (b, h, w, c) or clips (b, t, h, w, c)
    # timm's rand_bbox: a box of sides (h, w) * sqrt(1 - lam) centred anywhere, clipped to the image
    cut = jnp.sqrt(1 - lam)
    cut_h, cut_w = jnp.floor(height * cut).astype(jnp.int32), jnp.floor(width * cut).astype(jnp.int32)
    cy, cx = jax.random.randint(box_key, (2,), 0, jnp.array([height, width]))
    top, bottom = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    left, right = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)  # (h, w)
    box_lam = 1 - ((bottom - top) * (right - left)) / (height * width)
    reverse = images[::-1]
    cutmixed = jnp.where(box[:, :, None], reverse, images)  # the same box in every frame of a clip
    blended = images * lam.astype(images.dtype) + reverse * (1 - lam).astype(images.dtype)
    lam = jnp.where(applied, jnp.where(use_cutmix, box_lam, lam), 1.0).astype(jnp.float32)
    images = jnp.where(applied, jnp.where(use_cutmix, cutmixed, blended), images)
    return images, targets * lam + targets[::-1] * (1 - lam)

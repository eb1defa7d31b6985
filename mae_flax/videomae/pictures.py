"""The video family's reconstruction picture: per clip, three strips of its frames side by side (original | masked |
reconstruction with the visible tubes pasted), drawn in pixel colours. numpy only: the training loop and
mae-reconstruct draw the same picture from either backend's outputs.

The predictions are in the space of VideoMAE's targets (mae_flax.videomae.tubes.loss_targets): pixels un-normalised
with transformers' constants, and with norm_pix_loss each tubelet's channels standardised; each prediction is mapped
back with its own tubelet's mean and unbiased standard deviation (as the targets were made).
"""

import numpy as np
from einops import rearrange
from PIL import Image

from mae_flax.files import atomic_path
from mae_flax.videomae.tubes import loss_targets, unpatchify
from mae_flax.visualize import scaled_by_first, to_rgb8

STRIPS = ('original', 'masked', 'reconstruction_pasted')


def clip_panels(clips, pred_pixel_values, masked_indices, spec):
    """clips (b, t, h, w, c) as the model sees them (standardised); pred (b, m, pt*p*q*c) for the masked tubes ->
    {strip: (b, t, h, w, c) pixels}."""
    encoder = spec.encoder
    tubelet, patch, channels = encoder['tubelet_size'], encoder['patch_size'], spec.channels
    clips = np.asarray(clips, np.float32)
    _, pixels = (np.asarray(part) for part in loss_targets(clips, tubelet, patch, False))  # (b, n, pt*p*q*c)
    pred = np.asarray(pred_pixel_values, np.float32)
    rows, masked_indices = np.arange(len(clips))[:, None], np.asarray(masked_indices)
    if spec.norm_pix_loss:
        values = rearrange(pixels[rows, masked_indices], 'b m (s c) -> b m s c', c=channels)
        mean, std = values.mean(axis=-2, keepdims=True), np.sqrt(values.var(axis=-2, keepdims=True, ddof=1))
        pred = rearrange(
            rearrange(pred, 'b m (s c) -> b m s c', c=channels) * (std + 1e-6) + mean, 'b m s c -> b m (s c)'
        )
    frames, height, width = clips.shape[1:4]
    grid = (frames // tubelet, height // patch, width // patch)
    masked, pasted = pixels.copy(), pixels.copy()
    masked[rows, masked_indices] = np.nan  # drawn mid gray (visualize.to_rgb8)
    pasted[rows, masked_indices] = pred

    def frames_of(tokens):
        return np.asarray(unpatchify(tokens, grid, tubelet, patch, channels))

    return {'original': frames_of(pixels), 'masked': frames_of(masked), 'reconstruction_pasted': frames_of(pasted)}


def strips_image(panels, scale=1):
    """{strip: (b, t, h, w, c)} -> uint8 (b * 3 * h, t * w, 3): per clip its three strips, one frame per column,
    each clip scaled to [0, 255] by its original's range."""
    strips = scaled_by_first([panels[name] for name in STRIPS])
    return to_rgb8(rearrange(np.stack(strips), 'k b t h w c -> (b k h) (t w) c'), scale)


def save_strips(path, clips, pred_pixel_values, masked_indices, spec, scale=None):
    """Writes the strips of standardised clips as a PNG, atomically (frames enlarged to about 96px unless `scale`
    says); returns the path."""
    scale = scale or max(1, 96 // clips.shape[2])
    image = strips_image(clip_panels(clips, pred_pixel_values, masked_indices, spec), scale)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format='PNG')
    return path

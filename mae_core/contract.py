"""The model contract: what every family's MAE does, in either backend, so that the trainer, the commands and
the parity suite never ask which family they hold.

    model(img, *, noise=None, return_outputs=True) -> MAEOutput
    model(img, *, noise=None)                        -> what the family's upstream returns (vit-pytorch: the loss;
                                                        facebookresearch/mae: (loss, pred, mask))
    model.num_patches                                -> patches per image, the width of `noise`
    model.num_masked                                 -> how many of them are masked

`img` is a batch of normalised images ((b, c, h, w) in torch, (b, h, w, c) in Flax); `noise` (b, num_patches)
replaces the backend's random draw, and the family's masking convention (mae_core.masking) turns it into a mask.
Code that must not ask which family it holds (the trainer, the commands, the parity suite) passes
return_outputs=True and reads MAEOutput's fields.
"""

from typing import Any, NamedTuple


class MAEOutput(NamedTuple):
    """What `model(img, noise=..., return_outputs=True)` returns; arrays of the backend that computed them."""

    loss: Any  # () float32: mean squared error over the masked patches
    pred_pixel_values: Any  # (b, num_masked, patch_dim): the predictions for the masked patches
    masked_patches: Any  # (b, num_masked, patch_dim): their pixels (before norm_pix_loss standardises them)
    masked_indices: Any  # (b, num_masked)
    unmasked_indices: Any  # (b, num_patches - num_masked)
    intermediates: dict  # per-stage activations (STAGES below, and 'patches'), for parity checks and inspection


# the activations every family exposes in `intermediates`, in the order they are computed
STAGES = ('patch_embedding', 'encoded_tokens', 'decoder_input', 'decoded_tokens')

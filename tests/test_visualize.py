"""The reconstruction picture (mae_flax.visualize): what a person sees in the grid."""

import numpy as np

from mae_core import ModelSpec
from mae_flax.visualize import grid_image, reconstruction_panels


def test_a_masked_patch_is_neutral_gray_whatever_the_image_s_colours():
    # a low-contrast blue crop (a sky), standardised and drawn back as the run and mae-reconstruct draw it: a gray
    # taken in standardised pixels, or from the batch's range, came out tan, white or black in such rows
    spec = ModelSpec('official', dict(img_size=8, patch_size=4), dict())
    rng = np.random.default_rng(0)
    sky = np.clip(np.array([0.2, 0.35, 0.8]) + 0.02 * rng.standard_normal((2, 8, 8, 3)), 0, 1).astype(np.float32)
    images = spec.normalize(sky)
    masked = np.array([[0, 3], [1, 2]])
    pred = (images.mean() + 0.1 * rng.standard_normal((2, 2, 48))).astype(np.float32)
    panels = {name: spec.denormalize(panel) for name, panel in reconstruction_panels(images, pred, masked, 4).items()}
    grid = grid_image(panels)  # (2 * 8, 4 * 8, 3): original | masked | reconstruction | pasted
    masked_panel, reconstruction_panel = grid[:8, 8:16], grid[:8, 16:24]
    np.testing.assert_array_equal(masked_panel[:4, :4], 128)  # patch 0 of image 0: masked
    np.testing.assert_array_equal(reconstruction_panel[:4, 4:8], 128)  # patch 1: visible, nothing predicted
    assert masked_panel[4:, :4].std(axis=(0, 1)).max() > 0  # patch 2: visible, the sky's own pixels
    assert not np.isnan(panels['reconstruction_pasted']).any()

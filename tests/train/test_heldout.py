"""The held-out figure (mae_flax.heldout): photographs the default run never trains on, the ratio of a fill's
masked-patch error to the mean colour fill's, and the training-free blur beside it; measured by the run itself."""

import json

import numpy as np

from mae_core import ModelSpec
from mae_flax import heldout, photos
from mae_flax.patches import patchify, unpatchify
from mae_flax.train import data


def test_the_held_out_photos_never_train_the_default_run():
    assert photos.HELDOUT and not set(photos.HELDOUT) & set(data.DEFAULT_PHOTOS)
    assert len(data.PhotoSource(32, 3)) == len(photos.TRAINING) == len(photos.PHOTOGRAPHS) - len(photos.HELDOUT)
    crops = heldout.crops(32, 3)
    assert crops.shape == (len(photos.HELDOUT) * len(heldout.CROP_FRACTIONS), 32, 32, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops, heldout.crops(32, 3))  # the same pixels every time


def _masked(batch=3, size=16, patch=4, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.random((batch, size, size, 3), dtype=np.float32)
    masked = np.stack([rng.permutation((size // patch) ** 2)[:12] for _ in range(batch)])
    return pixels, masked


def test_the_figure_is_one_for_the_mean_colour_fill_and_zero_for_the_truth():
    pixels, masked = _masked()
    truth = patchify(pixels, (4, 4))[np.arange(3)[:, None], masked]
    assert heldout.ratio(pixels, truth, masked, 4) == 0
    assert abs(heldout.ratio(pixels, heldout.mean_colour_fill(pixels, masked, 4), masked, 4) - 1) < 1e-6


def test_the_blur_reads_nothing_of_a_masked_patch():
    pixels, masked = _masked()
    changed = patchify(pixels, (4, 4)).copy()
    changed[np.arange(3)[:, None], masked] = 0.123  # the masked patches' pixels, replaced
    other = np.asarray(unpatchify(changed, (16, 16), (4, 4), 3))
    np.testing.assert_array_equal(heldout.blur_fill(pixels, masked, 4), heldout.blur_fill(other, masked, 4))


def test_a_norm_pix_model_has_no_figure_of_its_own():
    spec = ModelSpec('official', dict(img_size=16, patch_size=4), dict(norm_pix_loss=True))
    assert heldout.pixel_predictions(np.zeros((1, 12, 48), np.float32), spec) is None


def test_the_run_measures_it_at_every_image_step_and_says_it(smoke_run):
    workdir, result = smoke_run
    records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
    figures = {record['step']: record for record in records if 'blur_ratio' in record}
    assert sorted(figures) == [0, 6, 12]  # the smoke run's image steps (image_every 6)
    assert all(0 < record['heldout_ratio'] < 10 and 0 < record['blur_ratio'] < 2 for record in figures.values())
    assert "on held-out photos the reconstruction's masked-patch error is" in result.stdout

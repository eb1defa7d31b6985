"""The one model description: checked on construction, the same JSON everywhere, read back exactly."""

import json

import numpy as np
import pytest

from mae_core import SIZES, ModelSpec, UsageError, decode_variant
from mae_flax import families
from parity_tests.pairs import small_spec, torch_mae


def test_json_round_trip_is_exact():
    spec = small_spec(image_size=(32, 48), patch_size=(8, 16), pool='mean', norm_pix_loss=True)
    assert ModelSpec.from_dict(json.loads(spec.to_json())) == spec
    assert json.loads(spec.to_json())['encoder']['image_size'] == [32, 48]


def test_defaults_are_filled_in_and_written_out():
    spec = ModelSpec(
        'vit_pytorch', dict(image_size=32, patch_size=4, dim=8, depth=1, heads=1, mlp_dim=16), {'decoder_dim': 8}
    )
    assert spec.encoder['layer_norm_eps'] == 1e-5 and spec.encoder['dim_head'] == 64 and spec.encoder['pool'] == 'cls'
    assert spec.mae['masking_ratio'] == 0.75 and spec.mae['decoder_depth'] == 1
    assert spec.pixel_mean == (0.485, 0.456, 0.406)  # ImageNet's, for 3 channels
    assert ModelSpec('vit_pytorch', spec.encoder | {'channels': 1}, spec.mae).pixel_mean == (pytest.approx(0.449),)


@pytest.mark.parametrize(
    ('changes', 'message'),
    [
        (dict(dim=-1), 'model.encoder.dim must be a positive integer, got -1'),
        (dict(depth=0), 'model.encoder.depth must be a positive integer, got 0'),
        (dict(mlp_dim=2.5), 'model.encoder.mlp_dim must be a positive integer, got 2.5'),
        (dict(pool='max'), "model.encoder.pool must be one of 'cls', 'mean', got 'max'"),
        (dict(image_size=(32, 0)), r'model.encoder.image_size must be a positive integer or \(height, width\)'),
        (dict(masking_ratio=1.0), 'model.mae.masking_ratio must be a number strictly between 0 and 1, got 1.0'),
        (dict(norm_pix_loss='yes'), "model.mae.norm_pix_loss must be true or false, got 'yes'"),
        (dict(layer_norm_eps=0), 'model.encoder.layer_norm_eps must be a positive number, got 0'),
    ],
)
def test_bad_fields_are_usage_errors_naming_the_field(changes, message):
    with pytest.raises(UsageError, match=message):
        small_spec(**changes)


def test_unknown_and_missing_fields_are_named():
    spec = small_spec()
    with pytest.raises(UsageError, match="model.encoder has no field 'width'"):
        ModelSpec('vit_pytorch', spec.encoder | {'width': 3}, spec.mae)
    with pytest.raises(UsageError, match='model.encoder.dim is required'):
        ModelSpec('vit_pytorch', {k: v for k, v in spec.encoder.items() if k != 'dim'}, spec.mae)
    with pytest.raises(
        UsageError, match="model.family must be one of 'vit_pytorch', 'official', 'videomae', got 'timm'"
    ):
        ModelSpec('timm', spec.encoder, spec.mae)
    with pytest.raises(UsageError, match=r'model.pixel_std must be 3 numbers, one per channel, got \(0.5,\)'):
        spec.replace(pixel_std=(0.5,))


def test_the_sidecar_of_earlier_versions_is_read(tmp_path):
    # what mae-convert 0.1 wrote beside its Flax files
    spec = small_spec()
    legacy = {'model': 'MAE', 'vit': dict(spec.encoder), 'mae': dict(spec.mae)}
    (tmp_path / 'mae.safetensors.json').write_text(json.dumps(legacy))
    read = ModelSpec.read(tmp_path / 'mae.safetensors.json')
    assert read.encoder == spec.encoder and read.mae == spec.mae


def test_a_file_that_is_not_a_description_is_one_clear_error(tmp_path):
    (tmp_path / 'x.json').write_text('{"family": "vit_pytorch"')
    with pytest.raises(UsageError, match='x.json is not a readable model description'):
        ModelSpec.read(tmp_path / 'x.json')


def test_normalize_and_denormalize_are_inverse_and_use_the_pixel_statistics():
    spec = small_spec().replace(pixel_mean=(0.5, 0.25, 0.0), pixel_std=(0.5, 0.25, 1.0))
    pixels = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    normalised = spec.normalize(pixels)
    np.testing.assert_allclose(normalised[..., 0], (pixels[..., 0] - 0.5) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(spec.denormalize(normalised), pixels, atol=1e-6)


def test_size_variants_are_the_paper_s():
    assert decode_variant('B/16') == dict(dim=768, depth=12, heads=12, dim_head=64, mlp_dim=3072, patch_size=16)
    assert all(size['heads'] * size['dim_head'] == size['dim'] for size in SIZES.values())
    with pytest.raises(UsageError, match="unknown model variant 'B/x'"):
        decode_variant('B/x')


def test_families_detect_their_state_dicts_and_name_what_they_do_not_know():
    family, kind = families.detect(torch_mae(small_spec()).state_dict(), 'mae.pt')
    assert (family.name, kind) == ('vit_pytorch', 'MAE')
    family, kind = families.detect(torch_mae(small_spec().replace(mae=None)).state_dict(), 'vit.pt')
    assert (family.name, kind) == ('vit_pytorch', 'ViT')
    with pytest.raises(UsageError, match='x.pt is not a state dict of any known model family'):
        families.detect({'fc.weight': np.zeros((2, 2))}, 'x.pt')

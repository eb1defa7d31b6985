"""What the tensor shapes tell about a checkpoint's hyperparameters, and the flag named when they do not."""

import pytest

import mae_torch
from mae_core.errors import UsageError
from mae_flax.vit_pytorch import infer
from parity_tests.pairs import small_spec, torch_mae


def given(**flags):
    return {field: (value, 'given') for field, value in flags.items()}


def test_single_head_attention_needs_no_flags():
    config = small_spec(heads=1, dim_head=48, decoder_heads=1, decoder_dim_head=32)
    inferred, sources = infer(torch_mae(config).state_dict(), {}, 'mae.pt')
    assert (inferred.encoder['heads'], inferred.encoder['dim_head'], inferred.mae['decoder_dim_head']) == (1, 48, 32)
    assert sources['heads'] == sources['decoder_dim_head'] == 'inferred'


def test_legacy_3d_pos_embedding_counts_its_cls_row():
    state_dict = torch_mae(small_spec(pool='cls')).state_dict()
    state_dict['encoder.pos_embedding'] = state_dict['encoder.pos_embedding'][None]  # (1, n + 1, d)
    state_dict['encoder.cls_token'] = state_dict['encoder.cls_token'][None]  # (1, 1, d)
    config, sources = infer(state_dict, given(heads=3, decoder_heads=2), 'legacy.pt')
    assert (config.encoder['image_size'], config.encoder['pool'], sources['pool']) == (32, 'cls', 'assumed')


def test_non_square_images_need_the_image_size():
    state_dict = torch_mae(small_spec(image_size=(32, 48), patch_size=(8, 16))).state_dict()
    flags = given(heads=3, decoder_heads=2, patch_size=(8, 16))
    with pytest.raises(UsageError, match='pass --image_size'):
        infer(state_dict, flags, 'mae.pt')
    config, _ = infer(state_dict, flags | given(image_size=(32, 48)), 'mae.pt')
    assert (config.encoder['image_size'], config.encoder['patch_size']) == ((32, 48), (8, 16))


def test_gray_images_need_the_channels():
    state_dict = torch_mae(small_spec(channels=1)).state_dict()  # patches of 8 * 8 * 1 = 64 values
    with pytest.raises(UsageError, match='pass --channels'):
        infer(state_dict, given(heads=3, decoder_heads=2), 'mae.pt')
    config, _ = infer(state_dict, given(heads=3, decoder_heads=2, channels=1), 'mae.pt')
    assert (config.encoder['channels'], config.encoder['patch_size']) == (1, 8)


def test_a_given_value_must_fit_the_weights():
    state_dict = torch_mae(small_spec(pool='mean')).state_dict()
    with pytest.raises(UsageError, match='pool = cls \\(given\\) does not fit the weights, which have pool = mean'):
        infer(state_dict, given(heads=3, decoder_heads=2, pool='cls'), 'mae.pt')


def test_vit_classifier_without_decoder():
    vit = mae_torch.ViT(image_size=32, patch_size=8, num_classes=5, dim=48, depth=2, heads=3, dim_head=16, mlp_dim=96)
    config, _ = infer(vit.state_dict(), given(dim_head=16), 'vit.pt')
    assert config.kind == 'ViT' and config.mae is None
    assert (config.encoder['heads'], config.encoder['depth'], config.encoder['num_classes']) == (3, 2, 5)


def test_what_the_weights_do_not_say_is_assumed_and_said():
    spec, sources = infer(torch_mae(small_spec()).state_dict(), given(heads=3, decoder_heads=2), 'mae.pt')
    assert (spec.pixel_mean, spec.pixel_std, spec.encoder['layer_norm_eps']) == ((0.0,) * 3, (1.0,) * 3, 1e-5)
    assert sources['pixel_mean'] == sources['layer_norm_eps'] == sources['masking_ratio'] == 'assumed'

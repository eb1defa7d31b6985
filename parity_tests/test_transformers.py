"""The official family against HuggingFace transformers' ViTMAEForPreTraining itself: the same weights and noise
give the same loss, predictions and mask, and every layout transformers reads or writes converts exactly.

Facts about transformers 5.24 this relies on (checked here, so the comparison is honest):
- a model built from a config starts with ZERO position embeddings, cls and mask tokens; every weight, the fixed
  sin-cos tables included, is loaded from ours (strictly) before comparing;
- its sdpa attention differs from eager by ~1e-6: the config asks for eager before the model is built;
- random LayerNorm scales and biases and a cls token of some size are needed for a swapped norm or a wrong
  epsilon to show, so the torch twin's are randomised.
Tolerances: the loss within 2e-6 relative (float32 through the same operations in another order: observed
<= 3e-7; mae_torch vs transformers is exact where both run eager torch), predictions within 1e-5 of their scale.
"""

import json

import numpy as np
import pytest
import safetensors.numpy
import torch
from flax import nnx

import mae_flax
from mae_flax.convert import load_torch_state_dict, to_torch_state_dict
from mae_flax.model_files import LoadedModel, read_model, write_model
from mae_flax.official import hf
from mae_flax.parity import scaled_error
from parity_tests.oracles import transformers
from parity_tests.pairs import images, official_spec, to_jax, torch_mae

CASES = {
    'base': official_spec(),
    'gray_patch4': official_spec(in_chans=1, patch_size=4),
    # 0.7 of 16 patches: 4 kept, 12 masked (vit-pytorch's rounding would mask 11)
    'fractional_mask': official_spec(mask_ratio=0.7),
    'norm_pix_eps12': official_spec(norm_pix_loss=True, layer_norm_eps=1e-12),
    'decoder_mlp_mask60': official_spec(decoder_mlp_ratio=2.0, mask_ratio=0.6),
}
LOSS_RTOL, PREDICTIONS = 2e-6, 1e-5


def _hf_model(spec, state_dict):
    config = transformers().ViTMAEConfig(**hf.config_from_spec(spec)[0])
    config._attn_implementation = 'eager'
    model = transformers().ViTMAEForPreTraining(config).eval()
    model.load_state_dict({key: torch.from_numpy(value) for key, value in state_dict.items()}, strict=True)
    return model


def _twins(spec, seed=0):
    """(mae_torch model, mae_flax model, transformers model) with the same weights; LayerNorms and the cls token
    randomised so that a swapped norm or a wrong epsilon would show."""
    torch_model = torch_mae(spec, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in torch_model.named_parameters():
            if 'norm' in name:
                param.copy_(param + 0.5 * torch.randn(param.shape, generator=generator))
        torch_model.cls_token.copy_(torch.randn(torch_model.cls_token.shape, generator=generator))
    flax_model = load_torch_state_dict(mae_flax.build(spec, rngs=nnx.Rngs(seed)), torch_model.state_dict())
    return torch_model.eval(), flax_model, _hf_model(spec, to_torch_state_dict(flax_model, layout='hf5'))


def _noise(spec, batch=3, seed=5):
    return torch.rand(batch, spec.num_patches, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('case', CASES)
def test_loss_predictions_and_mask_agree_with_transformers(case):
    spec = CASES[case]
    torch_model, flax_model, hf_model = _twins(spec)
    img, noise = images('normal', spec, batch=3), _noise(spec)
    with torch.no_grad():
        expected = hf_model(pixel_values=img, noise=noise)
        loss, pred, mask = torch_model(img, noise=noise)
    flax_loss, flax_pred, flax_mask = nnx.jit(lambda m, x, n: m(x, noise=n))(flax_model, to_jax(img), to_jax(noise))

    assert int(expected.mask[0].sum()) == spec.num_masked
    for ours in (mask.numpy(), np.asarray(flax_mask)):
        np.testing.assert_array_equal(ours, expected.mask.numpy())
    for ours in (loss.item(), float(flax_loss)):
        np.testing.assert_allclose(ours, expected.loss.item(), rtol=LOSS_RTOL)
    for ours in (pred.numpy(), np.asarray(flax_pred)):
        assert scaled_error(expected.logits.numpy(), ours) <= PREDICTIONS


def test_every_layout_transformers_reads_or_writes_converts_exactly(tmp_path):
    spec = CASES['base']
    _, flax_model, hf_model = _twins(spec)
    ours = to_torch_state_dict(flax_model)  # facebookresearch/mae's layout

    # transformers 5's in-memory names
    from_memory = load_torch_state_dict(mae_flax.build(spec, rngs=nnx.Rngs(1)), hf_model.state_dict())
    # what transformers 5.24's save_pretrained writes (the decoder under decoder.decoder_encoder.layer)
    hf_model.save_pretrained(tmp_path / 'saved')
    saved_keys = safetensors.numpy.load_file(tmp_path / 'saved' / 'model.safetensors')
    assert any(key.startswith('decoder.decoder_encoder.layer.0.attention.attention.query') for key in saved_keys)
    from_saved = read_model(tmp_path / 'saved')
    assert from_saved.layout == 'hf' and from_saved.spec.replace(pixel_mean=None, pixel_std=None) == spec
    for model in (from_memory, from_saved.model):
        converted = to_torch_state_dict(model)
        assert list(converted) == list(ours)
        for key, value in ours.items():
            np.testing.assert_array_equal(converted[key], value, err_msg=key)


def test_an_hf_export_loads_in_transformers_with_every_key_and_the_same_outputs(tmp_path):
    spec = CASES['fractional_mask']
    torch_model, flax_model, _ = _twins(spec)
    loaded = LoadedModel(tmp_path, 'flax', spec, {}, flax_model, {})
    write_model(loaded, tmp_path / 'hub', 'hf')
    keys = safetensors.numpy.load_file(tmp_path / 'hub' / 'model.safetensors')
    assert 'vit.encoder.layer.0.attention.attention.query.weight' in keys  # the Hub layout, as published
    assert 'decoder.decoder_layers.0.attention.attention.query.weight' in keys
    assert json.loads((tmp_path / 'hub' / 'preprocessor_config.json').read_text())['image_mean'] == list(
        spec.pixel_mean
    )

    model, info = transformers().ViTMAEForPreTraining.from_pretrained(
        tmp_path / 'hub', output_loading_info=True, attn_implementation='eager'
    )
    assert not any(info[name] for name in ('missing_keys', 'unexpected_keys', 'mismatched_keys')), info
    img, noise = images('normal', spec, batch=2), _noise(spec, batch=2)
    with torch.no_grad():
        expected, (loss, pred, _) = model.eval()(pixel_values=img, noise=noise), torch_model(img, noise=noise)
    np.testing.assert_allclose(loss.item(), expected.loss.item(), rtol=LOSS_RTOL)
    assert scaled_error(expected.logits.numpy(), pred.numpy()) <= PREDICTIONS
    # and back: the folder reads without flags into the same weights
    again = to_torch_state_dict(read_model(tmp_path / 'hub').model)
    for key, value in to_torch_state_dict(flax_model).items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)

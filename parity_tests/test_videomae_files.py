"""The video family's layouts and files against transformers: every layout converts exactly both ways, an HF export
loads in transformers with every key, detection tells VideoMAE from ViTMAE, and the model description is inferred
from the weights and an HF config."""

import json

import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

import mae_flax
from mae_core import UsageError, videomae
from mae_flax import families
from mae_flax.convert import load_torch_state_dict, to_torch_state_dict
from mae_flax.videomae import hf, infer
from parity_tests.oracles import transformers
from parity_tests.video_twins import CASES, twins


def _round_trip(model, state_dict, layout, encoder_only=False):
    """`state_dict` loaded into `model`, written out again in `layout`."""
    with pytest.warns(UserWarning, match='encoder alone') if encoder_only else _no_warning():
        load_torch_state_dict(model, state_dict)
    return to_torch_state_dict(model, layout=layout, encoder_only=encoder_only)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _assert_same(actual, expected):
    assert list(actual) == list(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(actual[key], np.asarray(value), err_msg=key)


def test_every_layout_converts_exactly_both_ways(tmp_path):
    spec = CASES['norm_pix']
    torch_model, flax_model, hf_model = twins('norm_pix')
    model = families.build_abstract(spec)  # every load below writes all it is read back for
    # MCG-NJU's layout is the torch twin's state dict, order included; its encoder alone has no 'encoder.' prefix
    _assert_same(_round_trip(model, torch_model.state_dict(), 'mcg'), torch_model.state_dict())
    encoder = to_torch_state_dict(flax_model, encoder_only=True)
    assert videomae.detect(encoder) == ('ViT', 'mcg') and 'blocks.0.attn.q_bias' in encoder
    _assert_same(_round_trip(model, encoder, 'mcg', encoder_only=True), encoder)
    for layout in ('hf', 'hf5', 'hf_model', 'hf5_model'):
        exported = to_torch_state_dict(flax_model, layout=layout)
        kind = 'ViT' if layout.endswith('_model') else 'MAE'
        assert videomae.detect(exported) == (kind, layout)
        _assert_same(_round_trip(model, exported, layout, encoder_only=kind == 'ViT'), exported)
    # transformers' own: its in-memory state dict, and what its save_pretrained writes (the Hub's q_bias names)
    in_memory = {key: value.numpy() for key, value in hf_model.state_dict().items()}
    assert set(to_torch_state_dict(flax_model, layout='hf5')) == set(in_memory)
    converted = _round_trip(model, in_memory, 'hf5')
    for key, value in in_memory.items():
        np.testing.assert_array_equal(converted[key], value, err_msg=key)
    hf_model.save_pretrained(tmp_path / 'saved')
    saved = safetensors.numpy.load_file(tmp_path / 'saved' / 'model.safetensors')
    assert 'videomae.encoder.layer.0.attention.attention.q_bias' in saved
    assert videomae.detect(saved) == ('MAE', 'hf')
    _assert_same(dict(sorted(_round_trip(model, saved, 'hf').items())), dict(sorted(saved.items())))
    # a scanned model holds the same weights per block
    scanned = nnx.eval_shape(lambda: mae_flax.build(spec, rngs=nnx.Rngs(0), scan_layers=True))
    from_scanned = to_torch_state_dict(load_torch_state_dict(scanned, saved), layout='hf')
    _assert_same(dict(sorted(from_scanned.items())), dict(sorted(saved.items())))


def test_an_hf_export_loads_in_transformers_with_every_key(tmp_path):
    spec = CASES['gray_non_square_tubelet1']
    _, flax_model, hf_model = twins('gray_non_square_tubelet1')
    config, processor = hf.config_from_spec(spec)
    (tmp_path / 'config.json').write_text(json.dumps(config))
    (tmp_path / 'preprocessor_config.json').write_text(json.dumps(processor))
    safetensors.numpy.save_file(to_torch_state_dict(flax_model, layout='hf'), tmp_path / 'model.safetensors')
    model, info = transformers().VideoMAEForPreTraining.from_pretrained(
        tmp_path, output_loading_info=True, attn_implementation='eager'
    )
    assert not any(info[name] for name in ('missing_keys', 'unexpected_keys', 'mismatched_keys')), info
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), hf_model.state_dict()[name].numpy(), err_msg=name)


def test_detect_tells_videomae_from_vit_mae():
    config = transformers().ViTMAEConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, image_size=16, patch_size=4)  # fmt: skip
    vit_mae = transformers().ViTMAEModel(config).state_dict()
    assert families.detect(vit_mae, 'vit_mae')[0].name == 'official'
    _, flax_model, _ = twins('norm_pix')
    for layout in videomae.LAYOUTS + ('hf_model', 'hf5_model'):
        family, kind = families.detect(to_torch_state_dict(flax_model, layout=layout), layout)
        assert (family.name, kind) == ('videomae', 'ViT' if layout.endswith('_model') else 'MAE')


def test_infer_reads_the_shapes_and_takes_the_rest_from_the_hf_config(tmp_path):
    for case, spec in CASES.items():
        _, flax_model, _ = twins(case)
        config, processor = hf.config_from_spec(spec)
        # what save_pretrained writes: only the fields that differ from VideoMAEConfig's defaults
        transformers().VideoMAEConfig(**config).save_pretrained(tmp_path / case)
        saved = json.loads((tmp_path / case / 'config.json').read_text())
        given = hf.given_from_config(saved, processor, 'config.json')
        for layout in ('hf', 'hf5'):
            inferred, sources = infer(to_torch_state_dict(flax_model, layout=layout), given, case)
            assert inferred.with_fields('mae', mask_ratio=0.75) == spec, case
        assert sources['hidden_size'] == 'from config.json' and sources['mask_ratio'] == 'assumed'
    # MCG-NJU's files say nothing but their weights: the head counts are asked for, the rest assumed upstream's
    mcg = to_torch_state_dict(flax_model)
    with pytest.raises(UsageError, match='pass --num_attention_heads'):
        infer(mcg, {}, 'checkpoint.pth')
    heads = {'num_attention_heads': (4, 'flag'), 'decoder_num_attention_heads': (2, 'flag')}
    inferred, sources = infer(mcg, heads | {'image_size': ((16, 24), 'flag'), 'num_frames': (2, 'flag')}, 'x.pth')
    assert inferred.encoder['layer_norm_eps'] == inferred.mae['decoder_norm_eps'] == 1e-6
    assert sources['layer_norm_eps'] == 'assumed' and sources['qkv_bias'] == 'inferred'
    assert (
        inferred.with_fields('encoder', layer_norm_eps=1e-12).with_fields('mae', decoder_norm_eps=1e-5, mask_ratio=0.75)
        == spec
    )
    with pytest.raises(UsageError, match='num_frames 3 must be divisible by tubelet_size 2'):
        infer(to_torch_state_dict(twins('norm_pix')[1]), heads | {'num_frames': (3, 'flag')}, 'x.pth')
    with pytest.raises(UsageError, match="transformers' VideoMAE decoder norm has eps 1e-05"):
        hf.config_from_spec(spec.with_fields('mae', decoder_norm_eps=1e-6))

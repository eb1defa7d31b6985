"""VideoMAE folders other programs wrote load with no flags and compute what the writer computed.

tests/fixtures/transformers4/videomae_* were written by transformers 4.57.6's own save_pretrained (with the
writer's outputs on fixed videos and masks, tests/fixtures/transformers_writers.py); the same folders are written
here by the installed transformers 5. Tolerances: the loss within 1e-5 relative, predictions and hidden states
within 1e-5 of their scale (float32 on the CPU through the same operations in another order; observed <= 1e-6).
"""

import json
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
from flax import nnx

from mae_core.errors import UsageError
from mae_flax.convert import to_torch_state_dict
from mae_flax.model_files import read_model, write_model
from parity_tests.oracles import transformers
from tests.fixtures import transformers_writers

FIXTURES = Path(__file__).parent / 'fixtures' / 'transformers4'
PRETRAINING = ('videomae_pretraining', 'videomae_pretraining_nonorm')
LOSS_RTOL, SCALE = 1e-5, 1e-5


@pytest.fixture(scope='module')
def transformers5_fixtures(tmp_path_factory):
    out = tmp_path_factory.mktemp('transformers5_video')
    transformers()
    transformers_writers.write_all(out, [name for name in transformers_writers.FIXTURES if name.startswith('videomae')])
    return out


def _record(root, name):
    return json.loads((root / 'records.json').read_text())['fixtures'][name]


def _expected(root, name, output):
    return np.load(root / 'outputs.npz')[_record(root, name)['outputs'][output]]


def _videos(root):
    """(videos (b, t, h, w, c) for Flax, bool_masked_pos (b, tokens)) the writer ran on."""
    inputs = np.load(root / 'inputs.npz')
    return jnp.asarray(inputs['videomae_pixel_values'].transpose(0, 1, 3, 4, 2)), inputs['videomae_bool_masked_pos']


def _read(folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        loaded = read_model(folder)
    return loaded, [str(w.message) for w in caught]


def _assert_pretraining_outputs(model, root, name):
    videos, mask = _videos(root)
    with jax.default_matmul_precision('highest'):
        loss, logits = model(videos, bool_masked_pos=mask)  # eager: the mask's count (75%) is read from it
        # jitted, the shapes come from the model's mask_ratio (transformers' configs hold none: VideoMAE's 0.9 is
        # assumed); a mask of another count gives a NaN loss, never a wrong one
        assert np.isnan(nnx.jit(lambda m, v, b: m(v, bool_masked_pos=b)[0])(model, videos, jnp.asarray(mask)))
    assert float(loss) == pytest.approx(_record(root, name)['losses']['loss'], rel=LOSS_RTOL)
    expected = _expected(root, name, 'logits')
    assert np.abs(np.asarray(logits) - expected).max() <= SCALE * np.abs(expected).max()


def _assert_encoder_outputs(model, root, name):
    videos, _ = _videos(root)
    with jax.default_matmul_precision('highest'):
        hidden = model.encode(videos)  # eager: an encoder alone has an abstract decoder, which jit would take
    expected = _expected(root, name, 'last_hidden_state')
    assert np.abs(np.asarray(hidden) - expected).max() <= SCALE * np.abs(expected).max()


@pytest.mark.parametrize('name', PRETRAINING)
def test_transformers4_video_folders_load_with_no_flags_and_give_the_writer_s_loss(name):
    loaded, said = _read(FIXTURES / name)
    assert loaded.spec.family == 'videomae' and not said and not loaded.encoder_only
    _assert_pretraining_outputs(loaded.model, FIXTURES, name)


@pytest.mark.parametrize('name', PRETRAINING)
def test_transformers5_video_folders_load_with_no_flags_and_give_the_writer_s_loss(transformers5_fixtures, name):
    loaded, _ = _read(transformers5_fixtures / name)
    _assert_pretraining_outputs(loaded.model, transformers5_fixtures, name)


def test_an_encoder_folder_loads_as_an_encoder_and_gives_the_writer_s_hidden_states():
    loaded, _ = _read(FIXTURES / 'videomae_model')
    assert loaded.encoder_only
    _assert_encoder_outputs(loaded.model, FIXTURES, 'videomae_model')
    with pytest.raises(UsageError, match='holds an encoder alone'):
        loaded.needs_decoder('mae-reconstruct')


def test_a_video_classifier_loads_its_encoder_and_says_it_left_the_head_out():
    loaded, said = _read(FIXTURES / 'videomae_classifier')
    assert loaded.encoder_only
    assert len(said) == 1 and 'left its head out' in said[0] and 'classifier.weight' in said[0]
    # its encoder is the file's: the classifier's encoder keys, each array loaded unchanged
    encoder_keys = [key for key in _record(FIXTURES, 'videomae_classifier')['tensors'] if key.startswith('videomae.')]
    written = to_torch_state_dict(loaded.model, layout='hf', encoder_only=True)
    assert sorted(written) == sorted(encoder_keys)
    file_arrays = safetensors.numpy.load_file(FIXTURES / 'videomae_classifier' / 'model.safetensors')
    for key in encoder_keys:
        np.testing.assert_array_equal(written[key], file_arrays[key], err_msg=key)


def test_hf_export_loads_strictly_in_transformers_with_the_writer_s_loss(tmp_path):
    loaded, _ = _read(FIXTURES / 'videomae_pretraining')
    write_model(loaded, tmp_path / 'flax.safetensors', 'flax')  # through a Flax file first: its spec travels
    flax_file, _ = _read(tmp_path / 'flax.safetensors')
    write_model(flax_file, tmp_path / 'hf', 'hf')
    model, info = transformers().VideoMAEForPreTraining.from_pretrained(tmp_path / 'hf', output_loading_info=True)
    assert not info['missing_keys'] and not info['unexpected_keys'] and not info['mismatched_keys']
    inputs = np.load(FIXTURES / 'inputs.npz')
    with torch.no_grad():
        out = model.eval()(
            pixel_values=torch.from_numpy(inputs['videomae_pixel_values']),
            bool_masked_pos=torch.from_numpy(inputs['videomae_bool_masked_pos']),
        )
    expected = _record(FIXTURES, 'videomae_pretraining')['losses']['loss']
    assert out.loss.item() == pytest.approx(expected, rel=LOSS_RTOL)


def test_an_encoder_exports_as_a_videomae_model_folder(tmp_path):
    loaded, _ = _read(FIXTURES / 'videomae_model')
    write_model(loaded, tmp_path / 'hf', 'hf')
    config = json.loads((tmp_path / 'hf' / 'config.json').read_text())
    assert config['architectures'] == ['VideoMAEModel']
    model, info = transformers().VideoMAEModel.from_pretrained(tmp_path / 'hf', output_loading_info=True)
    assert not info['missing_keys'] and not info['unexpected_keys']
    inputs = np.load(FIXTURES / 'inputs.npz')
    with torch.no_grad():
        hidden = model.eval()(pixel_values=torch.from_numpy(inputs['videomae_pixel_values'])).last_hidden_state
    expected = _expected(FIXTURES, 'videomae_model', 'last_hidden_state')
    assert np.abs(hidden.numpy() - expected).max() <= SCALE * np.abs(expected).max()

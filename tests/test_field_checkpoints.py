"""Checkpoints other programs wrote load with no flags and compute what the writer computed.

The folders under tests/fixtures/transformers4/ were written by transformers 4.57.6's own save_pretrained (the
script beside them wrote them and recorded the writer's outputs); the same fixtures are written here by the
installed transformers 5 at test time. Tolerances: the loss within 1e-5 relative and predictions / hidden states
within 1e-5 of their scale: float32 on the CPU through the same operations in another order (observed <= 1e-6);
a wrong table, a dropped bias or a swapped norm is off by 1e-2 or more.
"""

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
from flax import nnx
from PIL import Image

import mae_flax
from mae_core.errors import UsageError
from mae_core.resample import resample_grid
from mae_flax.cli import parity, reconstruct
from mae_flax.convert import load_torch_state_dict, to_torch_state_dict
from mae_flax.model_files import read_model, write_model
from parity_tests.oracles import transformers
from tests.fixtures import transformers_writers

FIXTURES = Path(__file__).parent / 'fixtures' / 'transformers4'
VITMAE = ('vitmae_from_config', 'vitmae_from_config_bin', 'vitmae_sharded', 'vitmae_sharded_bin', 'vitmae_sincos')
LOSS_RTOL, SCALE = 1e-5, 1e-5


@pytest.fixture(scope='module')
def transformers5_fixtures(tmp_path_factory):
    """The same fixtures, written by the installed transformers (5.x in CI)."""
    out = tmp_path_factory.mktemp('transformers5')
    names = [name for name in transformers_writers.FIXTURES if name.startswith('vitmae')]
    transformers()  # the oracle's import (skips nothing: CI installs it)
    transformers_writers.write_all(out, names)
    return out


def _records(root):
    return json.loads((root / 'records.json').read_text())['fixtures']


def _outputs(root, record):
    outputs = np.load(root / 'outputs.npz')
    return {name: outputs[key] for name, key in record['outputs'].items()}


def _inputs(root):
    inputs = np.load(root / 'inputs.npz')
    return jnp.asarray(inputs['vitmae_pixel_values'].transpose(0, 2, 3, 1)), jnp.asarray(inputs['vitmae_noise'])


def _read(folder):
    """read_model with its warnings recorded: (LoadedModel, [warning text])."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        loaded = read_model(folder)
    return loaded, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]  # not a ResourceWarning


def _flax_loss_and_pred(model, root):
    images, noise = _inputs(root)
    with jax.default_matmul_precision('highest'):
        loss, pred, _ = nnx.jit(lambda m, x, n: m(x, noise=n))(model, images, noise)
    return float(loss), np.asarray(pred)


def _assert_writer_s_outputs(model, root, name):
    record = _records(root)[name]
    loss, pred = _flax_loss_and_pred(model, root)
    assert loss == pytest.approx(record['losses']['loss'], rel=LOSS_RTOL)
    expected = _outputs(root, record)['logits']
    assert np.abs(pred - expected).max() <= SCALE * np.abs(expected).max()


def _expected_warnings(record):
    """One warning per fixed table that is not sin-cos, naming it and saying 'all zeros'."""
    return sorted(key for key, table in record['fixed_tables'].items() if table['kind'] != 'sincos')


@pytest.mark.parametrize('name', VITMAE)
def test_transformers4_folders_load_with_no_flags_and_give_the_writer_s_loss(name):
    loaded, said = _read(FIXTURES / name)
    record = _records(FIXTURES)[name]
    tables = _expected_warnings(record)
    assert len(said) == len(tables)
    for key, text in zip(tables, sorted(said), strict=True):
        assert key in text and 'all zeros' in text and 'computes with the file' in text and '\n' not in text
    _assert_writer_s_outputs(loaded.model, FIXTURES, name)


@pytest.mark.parametrize('name', ['vitmae_from_config', 'vitmae_sharded', 'vitmae_sincos'])
def test_transformers5_folders_load_with_no_flags_and_give_the_writer_s_loss(transformers5_fixtures, name):
    loaded, said = _read(transformers5_fixtures / name)
    assert len(said) == len(_expected_warnings(_records(transformers5_fixtures)[name]))
    _assert_writer_s_outputs(loaded.model, transformers5_fixtures, name)


def test_a_zero_table_is_fixed_not_a_parameter_and_survives_every_layout(tmp_path):
    loaded, _ = _read(FIXTURES / 'vitmae_from_config')
    assert not np.asarray(loaded.model.decoder_pos_embed[...]).any()
    params = nnx.state(loaded.model, nnx.Param)
    assert 'decoder_pos_embed' not in params and 'pos_embed' not in params  # never trained, never counted
    # Flax file -> torch file -> back: the table travels with the weights, and the loss stays the writer's
    write_model(loaded, tmp_path / 'mae.safetensors', 'flax')
    flax_file, _ = _read(tmp_path / 'mae.safetensors')
    _assert_writer_s_outputs(flax_file.model, FIXTURES, 'vitmae_from_config')
    write_model(flax_file, tmp_path / 'mae.pth', 'torch')
    torch_file, said = _read(tmp_path / 'mae.pth')
    assert len(said) == 1 and 'decoder_pos_embed' in said[0]
    _assert_writer_s_outputs(torch_file.model, FIXTURES, 'vitmae_from_config')


def test_an_hf_export_of_a_zero_table_gives_transformers_the_writer_s_loss(tmp_path):
    loaded, _ = _read(FIXTURES / 'vitmae_from_config')
    write_model(loaded, tmp_path / 'hf', 'hf')
    model, info = transformers().ViTMAEForPreTraining.from_pretrained(tmp_path / 'hf', output_loading_info=True)
    assert not info['missing_keys'] and not info['unexpected_keys']
    assert not model.decoder.decoder_pos_embed.detach().numpy().any()
    inputs = np.load(FIXTURES / 'inputs.npz')
    with torch.no_grad():
        out = model.eval()(
            pixel_values=torch.from_numpy(inputs['vitmae_pixel_values']), noise=torch.from_numpy(inputs['vitmae_noise'])
        )
    assert out.loss.item() == pytest.approx(_records(FIXTURES)['vitmae_from_config']['losses']['loss'], rel=LOSS_RTOL)


def test_an_encoder_alone_converts_to_every_layout_and_transformers_reads_it_back(tmp_path):
    loaded, said = _read(FIXTURES / 'vitmae_encoder')
    assert loaded.encoder_only and not said
    record = _records(FIXTURES)['vitmae_encoder']
    expected = _outputs(FIXTURES, record)['last_hidden_state']
    # the encoder's function: a full model with the file's encoder computes the writer's hidden states
    full = mae_flax.build(loaded.spec, rngs=nnx.Rngs(0))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the encoder-alone warning
        load_torch_state_dict(full, loaded.torch_arrays)
    images, noise = _inputs(FIXTURES)
    with jax.default_matmul_precision('highest'):
        hidden = np.asarray(full(images, noise=noise, return_outputs=True).intermediates['encoded_tokens'])
    assert np.abs(hidden - expected).max() <= SCALE * np.abs(expected).max()

    for out in ('enc.safetensors', 'enc.pth'):
        write_model(loaded, tmp_path / out, 'flax' if out.endswith('safetensors') else 'torch')
        again, _ = _read(tmp_path / out)
        assert again.encoder_only
        before, after = (to_torch_state_dict(m.model, encoder_only=True) for m in (loaded, again))
        assert before.keys() == after.keys()
        for key, value in before.items():
            np.testing.assert_array_equal(after[key], value, err_msg=key)
    write_model(loaded, tmp_path / 'hf', 'hf')
    model, info = transformers().ViTMAEModel.from_pretrained(tmp_path / 'hf', output_loading_info=True)
    assert not info['missing_keys'] and not info['unexpected_keys']
    inputs = np.load(FIXTURES / 'inputs.npz')
    with torch.no_grad():
        out = model.eval()(
            pixel_values=torch.from_numpy(inputs['vitmae_pixel_values']), noise=torch.from_numpy(inputs['vitmae_noise'])
        )
    hidden = out.last_hidden_state.numpy()
    assert np.abs(hidden - expected).max() <= SCALE * np.abs(expected).max()


def test_commands_that_need_a_decoder_refuse_an_encoder_alone_in_one_line(tmp_path):
    from mae_flax.cli import parity, reconstruct

    image = tmp_path / 'x.png'
    from PIL import Image

    Image.new('RGB', (16, 16), (120, 30, 200)).save(image)
    with pytest.raises(UsageError, match='holds an encoder alone .no decoder.: mae-reconstruct needs an MAE'):
        reconstruct.main([str(FIXTURES / 'vitmae_encoder'), str(image), '--out', str(tmp_path / 'grid.png')])
    with pytest.raises(UsageError, match='holds an encoder alone'):
        parity.main([str(FIXTURES / 'vitmae_encoder')])
    assert not (tmp_path / 'grid.png').exists()


def test_a_missing_or_damaged_shard_is_one_line_naming_it(tmp_path):
    folder = tmp_path / 'sharded'
    shutil.copytree(FIXTURES / 'vitmae_sharded', folder)
    shards = sorted(folder.glob('model-*.safetensors'))
    shards[0].write_bytes(shards[0].read_bytes()[:100])
    with pytest.raises(UsageError, match=f'{shards[0].name} is not a readable .safetensors checkpoint'):
        read_model(folder)
    shards[0].unlink()
    with pytest.raises(UsageError, match=f'lists the shard {shards[0].name}, which is not in'):
        read_model(folder)


def _hub_cache(root, repo, source, commit='0123456789abcdef0123456789abcdef01234567'):
    """A Hugging Face cache as huggingface_hub writes it: blobs, a snapshot of symlinks, refs/main."""
    base = root / f'models--{repo.replace("/", "--")}'
    (base / 'blobs').mkdir(parents=True)
    (base / 'refs').mkdir()
    (base / 'refs' / 'main').write_text(commit)
    snapshot = base / 'snapshots' / commit
    snapshot.mkdir(parents=True)
    for index, path in enumerate(sorted(source.iterdir())):
        blob = base / 'blobs' / f'{index:040x}'
        shutil.copyfile(path, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / path.name)
    return commit


def test_a_hub_id_in_the_cache_loads_offline_and_a_missing_one_is_one_line(tmp_path, monkeypatch):
    commit = _hub_cache(tmp_path / 'cache', 'facebook/vit-mae-tiny', FIXTURES / 'vitmae_sincos')
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.chdir(tmp_path)
    for name in ('facebook/vit-mae-tiny', f'facebook/vit-mae-tiny@{commit}'):
        loaded, _ = _read(name)
        _assert_writer_s_outputs(loaded.model, FIXTURES, 'vitmae_sincos')
    with pytest.raises(
        UsageError, match=r'facebook/vit-mae-huge: no such local path, and not in the Hugging Face cache'
    ):
        read_model('facebook/vit-mae-huge')
    # a local folder spelled like an id wins over the cache
    shutil.copytree(FIXTURES / 'vitmae_from_config', tmp_path / 'facebook' / 'vit-mae-tiny')
    _, said = _read('facebook/vit-mae-tiny')
    assert said and 'decoder_pos_embed' in said[0]  # the local folder's zero table, not the cache's sin-cos


def test_a_file_s_own_table_is_resampled_for_another_resolution_not_replaced(tmp_path):
    folder = tmp_path / 'own_table'
    shutil.copytree(FIXTURES / 'vitmae_from_config', folder)
    arrays = safetensors.numpy.load_file(folder / 'model.safetensors')
    own = np.random.default_rng(0).standard_normal(arrays['decoder.decoder_pos_embed'].shape).astype(np.float32)
    arrays['decoder.decoder_pos_embed'] = own  # a trained-looking table: neither sin-cos nor zeros
    safetensors.numpy.save_file(arrays, folder / 'model.safetensors', metadata={'format': 'pt'})
    loaded, _ = _read(folder)
    model = mae_flax.build(loaded.spec.with_fields('encoder', img_size=32), rngs=nnx.Rngs(0))  # 4x4 patches -> 8x8
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        load_torch_state_dict(model, loaded.torch_arrays)
    said = [str(w.message) for w in caught if 'decoder_pos_embed' in str(w.message)]
    # one warning that it is resampled, one that the model computes with the file's table (as with no resize)
    assert sum("the file's own fixed table" in text and 'resampled' in text for text in said) == 1, said
    assert sum('computes with the file' in text for text in said) == 1, said
    table = np.asarray(model.decoder_pos_embed[...])
    np.testing.assert_array_equal(table[0, 0], own[0, 0])  # the cls row as it was
    expected = resample_grid(own[0, 1:].reshape(4, 4, -1), (8, 8)).reshape(64, -1)
    np.testing.assert_allclose(table[0, 1:], expected, rtol=1e-6, atol=1e-6)  # float32 bicubic, the same kernel


def test_mae_parity_and_mae_reconstruct_take_a_transformers4_folder_with_its_zero_table(tmp_path, capsys):
    # the torch twin gets the folder's weights in upstream's names and its zero table, through the converter
    folder = FIXTURES / 'vitmae_from_config'
    assert parity.main([str(folder), '--grads']) == 0
    assert capsys.readouterr().out.strip().endswith('all pass')
    image = tmp_path / 'image.png'
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(image)
    for backend in ('flax', 'torch'):
        assert (
            reconstruct.main([str(folder), str(image), '--out', str(tmp_path / f'{backend}.png'), '--backend', backend])
            == 0
        )
    losses = re.findall(r'^loss (\S+)', capsys.readouterr().out, re.M)
    assert len(losses) == 2 and losses[0] == losses[1]  # the same zero table on both sides

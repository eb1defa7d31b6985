"""Torch in, torch out: --init_from a torch state dict, and mae-export back to one that mae_torch loads."""

import functools

import jax
import numpy as np
import pytest
import safetensors.torch
import torch
from flax import nnx

import mae_torch
from mae_core import ModelSpec
from mae_flax import model_files
from mae_flax.cli import export
from mae_flax.configs import mae
from mae_flax.convert import save_state_dict_file, to_torch_state_dict
from mae_flax.stack import Scanned
from mae_flax.train import model_state, optim, pretrain, steps
from mae_flax.train.workdir import load_config, restore_model


@pytest.mark.parametrize('suffix', ['.pt', '.safetensors'])
def test_export_loads_into_mae_torch_and_gives_the_flax_loss(smoke_run, tmp_path, suffix):
    workdir, _ = smoke_run
    path = tmp_path / f'mae{suffix}'
    assert export.main(['--workdir', str(workdir), '--out', str(path)]) == 0
    state_dict = torch.load(path) if suffix == '.pt' else safetensors.torch.load_file(path)
    model, step, config = restore_model(workdir)
    assert step == 12
    # the model description beside the export is the run's own
    assert ModelSpec.read(f'{path}.json') == model_state.model_spec(config)
    torch_model = mae_torch.build(model_state.model_spec(config))
    torch_model.load_state_dict(state_dict)  # strict: exactly vit-pytorch's keys and shapes

    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 16, 16, 3)).astype(np.float32)  # (b, h, w, c)
    noise = rng.uniform(size=(4, 16)).astype(np.float32)
    flax_loss = float(model(images, noise=noise))
    with torch.no_grad():
        torch_loss = float(torch_model(torch.from_numpy(images).permute(0, 3, 1, 2), noise=torch.from_numpy(noise)))
    # the same float32 function in two libraries: only the order of summation differs
    np.testing.assert_allclose(torch_loss, flax_loss, rtol=1e-5)


def test_export_encoder_only_is_a_vit_state_dict(smoke_run, tmp_path):
    path = tmp_path / 'vit.pt'
    assert export.main(['--workdir', str(smoke_run[0]), '--out', str(path), '--encoder-only']) == 0
    spec = ModelSpec.read(f'{path}.json')
    assert spec.mae is None and spec.encoder == model_state.model_spec(load_config(smoke_run[0])).encoder
    mae_torch.build(spec).load_state_dict(torch.load(path))


@pytest.fixture(scope='module')
def fresh_state():
    config = mae.get_config('smoke')
    config.mesh.update(data=1, fsdp=1)
    tx, _ = optim.make_optimizer(config)
    state = jax.jit(functools.partial(steps.init_state, config, tx))()
    graphdef, rest = model_state.model_parts(config)
    shardings = jax.tree.map(lambda x: x.sharding, state['params'])
    return config, state['params'], graphdef, rest, shardings


def test_init_from_a_torch_mae_takes_all_its_weights(fresh_state, tmp_path):
    config, params, graphdef, rest, shardings = fresh_state
    torch.manual_seed(3)
    torch_model = mae_torch.build(model_state.model_spec(config))
    path = save_state_dict_file(torch_model.state_dict(), tmp_path / 'mae.pt')
    loaded = pretrain.init_from_torch(path, params, graphdef, rest, shardings)
    for key, value in to_torch_state_dict(nnx.merge(graphdef, loaded, rest)).items():
        np.testing.assert_array_equal(value, torch_model.state_dict()[key].numpy(), err_msg=key)


def test_init_from_unwraps_a_ddp_training_checkpoint(fresh_state, tmp_path):
    # what a torch training script saves: {'model': state_dict of a DDP-wrapped module, 'optimizer': ...}
    config, params, graphdef, rest, shardings = fresh_state
    torch.manual_seed(5)
    torch_model = mae_torch.build(model_state.model_spec(config))
    wrapped = {'model': {f'module.{key}': value for key, value in torch_model.state_dict().items()}, 'epoch': 7}
    torch.save(wrapped, tmp_path / 'checkpoint.pth')
    loaded = pretrain.init_from_torch(tmp_path / 'checkpoint.pth', params, graphdef, rest, shardings)
    for key, value in to_torch_state_dict(nnx.merge(graphdef, loaded, rest)).items():
        np.testing.assert_array_equal(value, torch_model.state_dict()[key].numpy(), err_msg=key)


def test_init_from_a_torch_vit_takes_the_encoder_and_keeps_the_decoder(fresh_state, tmp_path):
    config, params, graphdef, rest, shardings = fresh_state
    torch.manual_seed(4)
    spec = model_state.model_spec(config)
    vit = mae_torch.build(spec.replace(mae=None).with_fields('encoder', num_classes=10))  # its head is dropped
    path = save_state_dict_file(vit.state_dict(), tmp_path / 'vit.safetensors')
    loaded = pretrain.init_from_torch(path, params, graphdef, rest, shardings)
    model = nnx.merge(graphdef, loaded, rest)
    for key, value in to_torch_state_dict(model.encoder).items():
        np.testing.assert_array_equal(value, vit.state_dict()[key].numpy(), err_msg=key)
    np.testing.assert_array_equal(model.decoder_pos_emb[...], params['decoder_pos_emb'])
    np.testing.assert_array_equal(model.mask_token[...], params['mask_token'])


def test_a_scanned_run_exports_a_flax_file_with_per_block_keys_that_reads_back_unscanned(smoke_run, tmp_path):
    loaded = model_files.read_model(smoke_run[0])
    assert isinstance(loaded.model.encoder.transformer.layers, Scanned)  # mae-train scans its blocks
    model_files.write_model(loaded, tmp_path / 'mae.safetensors', 'flax')
    keys = set(safetensors.torch.load_file(tmp_path / 'mae.safetensors'))
    assert 'encoder.transformer.layers.0.0.to_qkv.kernel' in keys and not any('stacked' in key for key in keys)
    again = model_files.read_model(tmp_path / 'mae.safetensors')
    assert not isinstance(again.model.encoder.transformer.layers, Scanned)
    expected = to_torch_state_dict(loaded.model)
    for key, array in to_torch_state_dict(again.model).items():
        np.testing.assert_array_equal(array, expected[key], err_msg=key)

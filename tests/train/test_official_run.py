"""mae-train on the official family, then out to facebookresearch/mae's layout and to a HuggingFace folder, and back
in with --init_from: what a researcher who continues from (or publishes) official checkpoints does."""

import json

import numpy as np
import pytest
import torch

import mae_torch
from mae_flax.cli import convert
from mae_flax.train import model_state
from mae_flax.train.workdir import restore_model
from parity_tests.oracles import transformers
from tests.train.conftest import REPO, train

MAE_SMOKE = f'--config={REPO}/mae_flax/configs/mae.py:mae_smoke'


def eval_losses(workdir):
    records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
    return {record['step']: record['eval_loss'] for record in records if 'eval_loss' in record}


@pytest.fixture(scope='module')
def official_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('official') / 'run'
    train([MAE_SMOKE, f'--workdir={workdir}'])
    return workdir


def test_it_trains_and_exports_to_facebookresearch_s_layout(official_run, tmp_path):
    assert convert.main([str(official_run), str(tmp_path / 'mae.pth')]) == 0
    state_dict = torch.load(tmp_path / 'mae.pth', weights_only=True)
    assert 'blocks.0.attn.qkv.weight' in state_dict and 'decoder_pred.weight' in state_dict
    model, _, config = restore_model(official_run)
    twin = mae_torch.build(model_state.model_spec(config))
    twin.load_state_dict(state_dict, strict=True)
    images = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype(np.float32)
    noise = np.random.default_rng(1).random((2, 16), dtype=np.float32)
    with torch.no_grad():
        torch_loss, _, _ = twin(torch.from_numpy(images).permute(0, 3, 1, 2), noise=torch.from_numpy(noise))
    flax_loss, _, _ = model(images, noise=noise)
    np.testing.assert_allclose(float(flax_loss), torch_loss.item(), rtol=1e-5)  # float32, another summation order


def test_its_hf_export_loads_in_transformers_with_the_same_loss(official_run, tmp_path):
    assert convert.main([str(official_run), str(tmp_path / 'hub'), '--to', 'hf']) == 0
    model, info = transformers().ViTMAEForPreTraining.from_pretrained(tmp_path / 'hub', output_loading_info=True)
    assert not any(info[name] for name in ('missing_keys', 'unexpected_keys', 'mismatched_keys')), info
    flax_model, _, _ = restore_model(official_run)
    images = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype(np.float32)
    noise = np.random.default_rng(1).random((2, 16), dtype=np.float32)
    with torch.no_grad():
        hf_loss = model.eval()(
            pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2), noise=torch.from_numpy(noise)
        ).loss
    np.testing.assert_allclose(float(flax_model(images, noise=noise)[0]), hf_loss.item(), rtol=1e-5)


def test_init_from_its_fb_export_starts_at_its_eval_loss(official_run, tmp_path):
    assert convert.main([str(official_run), str(tmp_path / 'mae.pth')]) == 0
    flags = [
        MAE_SMOKE,
        '--config.total_steps=1',
        f'--workdir={tmp_path / "again"}',
        f'--init_from={tmp_path / "mae.pth"}',
    ]
    train(flags)
    assert eval_losses(tmp_path / 'again')[0] == eval_losses(official_run)[12]


def test_init_from_a_huggingface_folder(official_run, tmp_path):
    assert convert.main([str(official_run), str(tmp_path / 'hub'), '--to', 'hf']) == 0
    flags = [MAE_SMOKE, '--config.total_steps=1', f'--workdir={tmp_path / "again"}', f'--init_from={tmp_path / "hub"}']
    train(flags)
    assert eval_losses(tmp_path / 'again')[0] == eval_losses(official_run)[12]

"""mae-train and mae-finetune from a checkpoint that transformers wrote with zero position tables: the runs compute
with the file's tables, never train them, keep them through resume, and write them back on export."""

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from mae_flax.configs import classify as classify_configs
from mae_flax.configs import mae
from mae_flax.model_files import read_model, write_model
from mae_flax.train import classify, pretrain, workdir
from parity_tests.oracles import transformers

FIXTURES = Path(__file__).resolve().parents[1] / 'fixtures' / 'transformers4'


def _config(spec, steps):
    config = mae.get_config('mae_smoke')
    config.model = spec.to_dict()
    config.update(total_steps=steps, log_every=2, image_every=100, num_eval_images=0, compilation_cache='')
    config.checkpoint.every_steps = 2
    return config


def test_mae_train_from_a_zero_table_trains_with_it_keeps_it_and_exports_it(tmp_path):
    folder = FIXTURES / 'vitmae_from_config'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        spec = read_model(folder).spec
    run = tmp_path / 'run'
    with pytest.warns(
        UserWarning, match="'decoder.decoder_pos_embed' is not the sin-cos position embedding .all zeros"
    ):
        first = pretrain.train(_config(spec, 2), run, init_from=folder)
    assert np.isfinite(first['last_loss'])
    tables = workdir.read_tables(run)
    assert list(tables) == ['decoder_pos_embed'] and not tables['decoder_pos_embed'].any()

    resumed = pretrain.train(_config(spec, 4), run)  # resume: the workdir's table, --init_from not needed
    assert resumed['step'] == 4 and resumed['steps_run'] == 2
    model, step, _ = workdir.restore_model(run)
    assert step == 4 and not np.asarray(model.decoder_pos_embed[...]).any()
    assert np.asarray(model.pos_embed[...]).any()  # the encoder's sin-cos table is computed, as before

    write_model(read_model(run), tmp_path / 'hf', 'hf')
    exported = safetensors.numpy.load_file(tmp_path / 'hf' / 'model.safetensors')
    assert not exported['decoder.decoder_pos_embed'].any()
    _, info = transformers().ViTMAEForPreTraining.from_pretrained(tmp_path / 'hf', output_loading_info=True)
    assert not info['missing_keys'] and not info['unexpected_keys']


def test_mae_finetune_takes_an_encoder_s_own_table(tmp_path):
    folder = tmp_path / 'zero_encoder_table'
    shutil.copytree(FIXTURES / 'vitmae_encoder', folder)
    arrays = safetensors.numpy.load_file(folder / 'model.safetensors')
    arrays['embeddings.position_embeddings'] = np.zeros_like(arrays['embeddings.position_embeddings'])
    safetensors.numpy.save_file(arrays, folder / 'model.safetensors', metadata={'format': 'pt'})
    config = classify_configs.get_config('smoke')
    with pytest.warns(UserWarning, match="'embeddings.position_embeddings' is not the sin-cos .* .all zeros"):
        task = classify.Classification(config, tmp_path / 'ft', init_from=folder)
    assert task.spec.encoder['embed_dim'] == 16
    assert not task.arrays['pos_embed'].any()  # the classifier's position parameter starts from the file's table

"""The input pipeline: sources, skipping unreadable files, sharding by process, resumable iteration."""

import warnings

import numpy as np
import pytest
from PIL import Image

from mae_flax.configs import mae
from mae_flax.train import data, optim, sharding, trainer

DATA = mae.get_config('smoke').data


def batches(source, count, process_index=0, process_count=1, batch=8, state=None):
    iterator = data.train_iterator(source, DATA, (16, 16), 0, batch, process_index, process_count)
    if state is not None:
        iterator.set_state(state)
    return [next(iterator) for _ in range(count)], iterator


def test_default_source_gives_uint8_crops():
    (batch,), _ = batches(data.make_source('default', (16, 16), 3), 1)
    assert batch.shape == (8, 16, 16, 3) and batch.dtype == np.uint8
    assert batch.std() > 10  # photographs, not blank crops


def test_process_shards_concatenate_to_the_single_process_batches():
    source = data.make_source('default', (16, 16), 3)
    whole, _ = batches(source, 3)
    halves = [batches(source, 3, process_index=p, process_count=2)[0] for p in range(2)]
    for step in range(3):
        np.testing.assert_array_equal(np.concatenate([halves[0][step], halves[1][step]]), whole[step])


def test_iterator_state_resumes_at_the_same_batch():
    source = data.make_source('default', (16, 16), 3)
    expected, _ = batches(source, 4)
    _, iterator = batches(source, 2)
    resumed, _ = batches(source, 2, state=iterator.get_state())
    np.testing.assert_array_equal(np.stack(resumed), np.stack(expected[2:]))


def test_unreadable_images_are_skipped_with_a_warning(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((20, 24, 3), 60 * i, np.uint8)).save(tmp_path / f'good{i}.png')
    (tmp_path / 'sub').mkdir()
    (tmp_path / 'sub' / 'broken.jpg').write_bytes(b'not a jpeg')
    (tmp_path / 'truncated.png').write_bytes((tmp_path / 'good0.png').read_bytes()[:40])
    source = data.make_source(str(tmp_path), (16, 16), 3)
    assert len(source) == 5  # recursive
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        (batch, *_), _ = batches(source, 3)
    assert batch.shape == (8, 16, 16, 3)
    assert {p.name for p in source.skipped} == {'broken.jpg', 'truncated.png'}
    assert any('skipping unreadable image' in str(w.message) for w in caught)


def test_empty_folder_is_a_clear_error_before_compiling(tmp_path):
    config = mae.get_config('smoke')
    config.data.source = str(tmp_path)
    with pytest.raises(ValueError, match='no images in'):
        trainer.train(config, tmp_path / 'workdir')
    assert not (tmp_path / 'workdir' / 'checkpoints').exists()


@pytest.mark.parametrize('suffix', ['.npy', '.npz'])
def test_array_sources(tmp_path, suffix):
    images = np.random.default_rng(0).uniform(size=(5, 24, 24, 3)).astype(np.float32)
    path = tmp_path / f'images{suffix}'
    np.save(path, images) if suffix == '.npy' else np.savez(path, images=images)
    (batch,), _ = batches(data.make_source(str(path), (16, 16), 3), 1)
    assert batch.shape == (8, 16, 16, 3) and batch.dtype == np.uint8


def test_array_source_rejects_channels_first(tmp_path):
    np.save(tmp_path / 'nchw.npy', np.zeros((2, 3, 16, 16), np.uint8))
    with pytest.raises(ValueError, match=r'expected images \(n, h, w, 3\)'):
        data.make_source(str(tmp_path / 'nchw.npy'), (16, 16), 3)


def test_weight_decay_only_on_linear_kernels():
    import jax
    from flax import nnx

    from mae_flax import families

    model = nnx.eval_shape(lambda: trainer.build_model(mae.get_config('smoke'), nnx.Rngs(0)))
    mask = optim.weight_decay_mask(nnx.to_pure_dict(nnx.state(model, nnx.Param)), families.of(model).decays)
    flat = {jax.tree_util.keystr(path): decays for path, decays in jax.tree_util.tree_leaves_with_path(mask)}
    no_decay = {key for key, decays in flat.items() if not decays}
    assert all(key.endswith("['kernel']") for key, decays in flat.items() if decays)
    for name in ('pos_embedding', 'decoder_pos_emb', 'cls_token', 'mask_token', "['bias']", "['scale']"):
        assert any(name in key for key in no_decay), name
    assert len(flat) - len(no_decay) == sum(key.endswith("['kernel']") for key in flat)


def test_fsdp_shards_the_largest_divisible_dimension():
    assert sharding.fsdp_spec((48, 96), 4) == sharding.P(None, 'fsdp')
    assert sharding.fsdp_spec((96, 47), 4) == sharding.P('fsdp', None)
    assert sharding.fsdp_spec((3, 5), 4) == sharding.P()
    assert sharding.fsdp_spec((64, 64), 1) == sharding.P()

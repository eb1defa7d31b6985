"""The input pipeline: sources, skipping unreadable files, sharding by process, resumable iteration."""

import warnings

import numpy as np
import pytest
from PIL import Image

from mae_core.errors import UsageError
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        source = data.make_source(str(tmp_path), (16, 16), 3)  # a sample is decoded at start-up
        (batch, *_), _ = batches(source, 3)
    assert len(source) == 5  # recursive
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


def _gradient(height=8, width=16):
    return np.tile(np.linspace(0, 1, width), (height, 1))  # (h, w) in [0, 1]


def test_a_16_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    values = (_gradient() * 65535).round().astype(np.uint16)
    Image.fromarray(values).save(tmp_path / 'deep.png')
    with Image.open(tmp_path / 'deep.png') as image:
        assert image.mode.startswith('I')
        pixels = np.asarray(data.to_8bit(image, 3, 'deep.png'))
    np.testing.assert_allclose(pixels[..., 0], values / 257, atol=0.51)  # what an 8-bit PNG of it would hold
    assert pixels.min() == 0 and pixels.max() == 255 and len(np.unique(pixels)) > 10


def test_transparency_is_composited_over_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[:4, :, 3], rgba[4:, :, 3] = 200, 255, 0  # top opaque red-ish, bottom fully transparent
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'alpha.png')
    Image.fromarray(rgba, 'RGBA').convert('P').save(tmp_path / 'palette.png', transparency=0)
    with Image.open(tmp_path / 'alpha.png') as image:
        pixels = np.asarray(data.to_8bit(image, 3, 'alpha.png'))
    assert tuple(pixels[0, 0]) == (200, 0, 0) and tuple(pixels[-1, -1]) == (255, 255, 255)
    with Image.open(tmp_path / 'palette.png') as image:
        assert np.asarray(data.to_8bit(image, 3, 'palette.png')).shape == (8, 8, 3)


def test_exif_rotation_and_cmyk_are_honoured(tmp_path):
    picture = Image.fromarray((np.stack([_gradient(8, 16)] * 3, -1) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; viewers rotate 90 degrees clockwise
    picture.save(tmp_path / 'turned.jpg', exif=exif, quality=95)
    picture.convert('CMYK').save(tmp_path / 'cmyk.jpg', quality=95)
    with Image.open(tmp_path / 'turned.jpg') as image:
        assert np.asarray(data.to_8bit(image, 3, 'turned.jpg')).shape == (16, 8, 3)  # upright, as shown
    with Image.open(tmp_path / 'cmyk.jpg') as image:
        assert image.mode == 'CMYK'
        np.testing.assert_allclose(
            np.asarray(data.to_8bit(image, 3, 'cmyk.jpg'), float), np.asarray(picture, float), atol=12
        )


def test_a_float_image_outside_zero_one_is_an_error_naming_the_file(tmp_path):
    Image.fromarray((_gradient() * 255).astype(np.float32), 'F').save(tmp_path / 'hdr.tif')
    with pytest.raises(UsageError, match=r'hdr.tif: a float image must hold values in \[0, 1\], found 0..255'):
        data.make_source(str(tmp_path), (16, 16), 3)


@pytest.mark.parametrize(
    ('values', 'message'),
    [
        (lambda a: a * 255, r'image 0 is float, so its values must be in \[0, 1\]; found 0..255'),
        (lambda a: np.where(a > 0.5, np.nan, a), r'and \d+ NaN/Inf'),
    ],
)
def test_float_arrays_outside_zero_one_are_refused_at_start_up(tmp_path, values, message):
    np.save(tmp_path / 'images.npy', values(np.stack([np.stack([_gradient(16, 16)] * 3, -1)] * 4)).astype(np.float32))
    with pytest.raises(UsageError, match=message):
        data.make_source(str(tmp_path / 'images.npy'), (16, 16), 3)


def test_a_bad_item_beyond_the_start_up_sample_is_refused_when_read(tmp_path):
    images = np.random.default_rng(0).random((100, 16, 16, 3)).astype(np.float32)
    sampled = set(np.linspace(0, 99, data.SAMPLE).astype(int))
    bad = next(i for i in range(100) if i not in sampled)
    images[bad, 0, 0, 0] = np.inf
    np.save(tmp_path / 'images.npy', images)
    source = data.make_source(str(tmp_path / 'images.npy'), (16, 16), 3)
    with pytest.raises(UsageError, match=f'image {bad} is float'):
        source[bad]


def test_missing_and_non_array_files_are_one_line_errors_that_never_suggest_unpickling(tmp_path):
    with pytest.raises(UsageError, match='no such file'):
        data.make_source(str(tmp_path / 'missing.npy'), (16, 16), 3)
    (tmp_path / 'notes.npy').write_text('not an array')
    with pytest.raises(UsageError, match='is not a numpy array file') as error:
        data.make_source(str(tmp_path / 'notes.npy'), (16, 16), 3)
    assert 'pickle' not in str(error.value)

"""The input pipeline: sources, skipping unreadable files, sharding by process, resumable iteration."""

import itertools
import os
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from mae_core.errors import UsageError
from mae_flax.configs import mae
from mae_flax.train import data, model_state, optim, pretrain, sharding

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
        pretrain.train(config, tmp_path / 'workdir')
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

    model = nnx.eval_shape(lambda: model_state.build_model(mae.get_config('smoke'), nnx.Rngs(0)))
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


def _pictures(folder, count=6, size=(48, 64)):
    """`count` small smooth pictures, JPEG and PNG, some in a sub-folder; their names in the sources' order."""
    rng = np.random.default_rng(0)
    (folder / 'sub').mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        colours = rng.uniform(0, 255, (2, 3))
        picture = colours[0] + _gradient(*size)[..., None] * (colours[1] - colours[0])  # (h, w, 3)
        name = f'{"sub/" if index % 2 else ""}{index}.{"png" if index % 3 == 0 else "jpg"}'
        Image.fromarray(picture.astype(np.uint8)).save(folder / name, quality=95)
        names.append(name)
    return sorted(names, key=lambda name: name.split('/'))


def _jpeg(size=(96, 128), orientation=1):
    """A JPEG's bytes: a photograph, shrunk to `size` (h, w), stored turned as its EXIF orientation says."""
    import io

    import skimage

    picture = Image.fromarray(skimage.data.astronaut()).resize(size[::-1], Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    picture.save(buffer, 'JPEG', quality=95, exif=exif)
    return buffer.getvalue()


def test_array_record_shards_give_the_same_crops_as_the_folder(tmp_path):
    from mae_flax.cli import prepare

    _pictures(tmp_path / 'images')
    prepare.pack(tmp_path / 'images', tmp_path / 'shards', 2)
    folder_batches, _ = batches(data.make_source(str(tmp_path / 'images'), (16, 16), 3), 2)
    for spelling in ('shards', 'shards/*.array_record', 'shards/images-00001-of-00002.array_record'):
        source = data.make_source(str(tmp_path / spelling), (16, 16), 3)
        assert isinstance(source, data.ArrayRecordSource)
    source = data.make_source(str(tmp_path / 'shards'), (16, 16), 3)
    shard_batches, _ = batches(source, 2)
    np.testing.assert_array_equal(np.stack(shard_batches), np.stack(folder_batches))  # same bytes, same decoder


@pytest.mark.parametrize(
    ('box', 'expected'),
    [((0, 0, 128, 96), 4), ((0, 0, 63, 64), 2), ((0, 0, 31, 200), 1), ((0, 0, 1000, 1000), 8)],
)
def test_draft_reduction_is_the_largest_that_keeps_the_crop_at_the_output_size(box, expected):
    assert data.draft_reduction(box, (16, 16)) == expected


@pytest.mark.parametrize('orientation', [1, 6, 3, 8])
def test_draft_decoding_reduces_a_jpeg_to_at_least_the_output_size_and_barely_changes_the_crop(orientation):
    def crop(draft_size):
        image, box = data.decode(
            _jpeg(orientation=orientation), 'x.jpg', 3, lambda w, h: (8, 4, w - 4, h - 8), draft_size
        )
        return image, box, np.asarray(image.resize((16, 16), Image.Resampling.BICUBIC, box=box), float)

    full, full_box, exact = crop(None)
    reduced, box, approximate = crop((16, 16))
    assert reduced.size == (-(-full.width // 4), -(-full.height // 4))  # 1/4: the crop is 116x84
    assert box[2] - box[0] >= 16 and box[3] - box[1] >= 16
    # libjpeg's reduced decoding filters differently from bicubic resizing: a few gray levels, documented in
    # data.decode; a crop shifted by one reduced pixel (the EXIF mapping wrong) would differ by far more
    assert np.abs(exact - approximate).mean() < 4


def test_draft_decoding_leaves_other_formats_bitwise_unchanged(tmp_path):
    import io

    buffer = io.BytesIO()
    Image.open(io.BytesIO(_jpeg())).save(buffer, 'PNG')
    full = data.decode(buffer.getvalue(), 'x.png', 3, lambda w, h: (0, 0, w, h))
    drafted = data.decode(buffer.getvalue(), 'x.png', 3, lambda w, h: (0, 0, w, h), (16, 16))
    assert full[1] == drafted[1]
    np.testing.assert_array_equal(np.asarray(full[0]), np.asarray(drafted[0]))


def _age(folder, seconds):
    """Dates every folder in the tree `seconds` ago: a listing made now can be trusted (not 'racy')."""
    stamp = time.time() - seconds
    for path in [folder, *folder.rglob('*')]:
        if path.is_dir():
            os.utime(path, (stamp, stamp))


def test_folder_index_is_cached_beside_the_folder_and_relisted_when_a_folder_changes(tmp_path, monkeypatch):
    names = _pictures(tmp_path / 'images')
    (tmp_path / 'images' / 'a-c.png').write_bytes((tmp_path / 'images' / '0.png').read_bytes())  # sorts after a/..
    (tmp_path / 'images' / 'a').mkdir()
    (tmp_path / 'images' / 'a' / 'b.png').write_bytes((tmp_path / 'images' / '0.png').read_bytes())
    _age(tmp_path / 'images', 60)
    listed = data.image_index(tmp_path / 'images')
    expected = [str(p.relative_to(tmp_path / 'images')) for p in sorted((tmp_path / 'images').rglob('*'))]
    assert listed == [name for name in expected if name.endswith(('.png', '.jpg'))]  # the order of sorted(rglob)
    assert listed.index('a/b.png') < listed.index('a-c.png') and set(names) <= set(listed)
    assert (tmp_path / '.images.mae-index.json').is_file()

    walk = data._walk
    monkeypatch.setattr(data, '_walk', lambda folder: pytest.fail('listed again although nothing changed'))
    assert data.image_index(tmp_path / 'images') == listed
    monkeypatch.setattr(data, '_walk', walk)
    (tmp_path / 'images' / 'sub' / 'new.png').write_bytes((tmp_path / 'images' / '0.png').read_bytes())
    os.utime(tmp_path / 'images' / 'sub', (time.time() - 30, time.time() - 30))  # a change, whatever the mtime tick
    assert 'sub/new.png' in data.image_index(tmp_path / 'images')


def test_folder_index_goes_to_the_user_cache_when_it_cannot_be_written_beside_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    _pictures(tmp_path / 'images', count=2)
    (tmp_path / '.images.mae-index.json').mkdir()  # in the way: the file cannot be written there
    _age(tmp_path / 'images', 60)
    listed = data.image_index(tmp_path / 'images')
    assert len(list((tmp_path / 'cache' / 'mae' / 'index').glob('*.json'))) == 1
    monkeypatch.setattr(data, '_walk', lambda folder: pytest.fail('listed again although nothing changed'))
    assert data.image_index(tmp_path / 'images') == listed


def test_a_freshly_changed_folder_is_not_cached(tmp_path):
    _pictures(tmp_path / 'images', count=2)  # just written: a change in the same mtime tick could go unseen
    data.image_index(tmp_path / 'images')
    assert not (tmp_path / '.images.mae-index.json').exists()


def test_worker_processes_give_the_same_batches_and_resume_bitwise(tmp_path):
    import grain

    source = data.make_source('default', (16, 16), 3)
    expected, _ = batches(source, 4, batch=4)
    config = DATA.copy_and_resolve_references()
    config.workers = 2

    def iterator():
        return data.train_iterator(source, config, (16, 16), 0, 4, 0, 1)

    first = iterator()
    try:
        np.testing.assert_array_equal(np.stack([next(first) for _ in range(2)]), np.stack(expected[:2]))
        (tmp_path / 'data').mkdir()
        grain.checkpoint.CheckpointHandler().save(tmp_path / 'data', args=grain.checkpoint.CheckpointSave(first))
    finally:
        first.close()
    resumed = iterator()
    try:
        grain.checkpoint.CheckpointHandler().restore(
            tmp_path / 'data', args=grain.checkpoint.CheckpointRestore(resumed)
        )
        np.testing.assert_array_equal(np.stack([next(resumed) for _ in range(2)]), np.stack(expected[2:]))
    finally:
        resumed.close()


def test_array_record_sources_that_cannot_be_read_are_one_line_errors(tmp_path):
    from mae_flax.cli import prepare

    with pytest.raises(UsageError, match='no .array_record files found there'):
        data.make_source(str(tmp_path / 'missing-*.array_record'), (16, 16), 3)
    (tmp_path / 'junk.array_record').write_bytes(b'not an array record file')
    with pytest.raises(UsageError, match='not readable as ArrayRecord shards'):
        data.make_source(str(tmp_path / 'junk.array_record'), (16, 16), 3)
    _pictures(tmp_path / 'images', count=4)
    prepare.pack(tmp_path / 'images', tmp_path / 'shards', 2)
    (tmp_path / 'shards' / 'images-00001-of-00002.array_record').unlink()
    with pytest.raises(UsageError, match='expected 2 shards as their names say, found 1'):
        data.make_source(str(tmp_path / 'shards'), (16, 16), 3)


@pytest.mark.parametrize(
    ('field', 'value', 'message'),
    [
        ('workers', -1, 'config.data.workers must be an integer >= 0, got -1'),
        ('draft', None, 'config.data.draft must be true or false, got None'),
    ],
)
def test_bad_data_fields_are_refused_naming_the_field(field, value, message):
    from mae_flax.train import config_checks

    config = mae.get_config('smoke')
    config.data[field] = value
    with pytest.raises(UsageError, match=message):
        config_checks.check(config)


def test_colour_augmentations_are_off_by_default_and_recolour_the_same_crops_when_on():
    source = data.ArrayImages(np.random.default_rng(0).integers(0, 256, (4, 24, 24, 3), np.uint8))
    config = mae.get_config('smoke').data
    assert config.color_permute == 0 and config.color_invert == 0  # the recipes' default: not in the stream

    def first(**colour):
        colour_config = config.copy_and_resolve_references()
        colour_config.update(colour)
        stream = data.crops(source, colour_config, 16, seed=0)
        return np.stack([stream[k] for k in range(6)])

    plain = first()
    np.testing.assert_array_equal(first(color_invert=1.0), 255 - plain)  # the same crops, inverted
    permuted = first(color_permute=1.0)
    for k in range(6):  # each crop's channels, shuffled as a whole
        assert any(np.array_equal(permuted[k], plain[k][..., order]) for order in itertools.permutations(range(3)))

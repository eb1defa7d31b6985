"""mae-finetune with a video model: the embedded motion clips (labels that only the order of the frames gives, a
fixed validation split on photographs the training never sees), folders of video files in the Kinetics layout,
mixup on clips, a short run whose exported torch classifier gives the Flax classifier's logits, and bad input as one
line. Tiny clips (4 frames of 16px, one block) and one shared run, so that the file takes seconds.

Tolerance: the exported torch classifier against the Flax one, strict float32, within 1e-5 of the logits' scale (the
parity suite's stage tolerance, parity_tests/tolerances.py: the same operations in another order, observed <= 1e-6).
"""

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
from flax import nnx

from mae_core.errors import UsageError
from mae_core.spec import ModelSpec
from mae_flax import families, photos
from mae_flax.configs import classify as classify_configs
from mae_flax.convert import load_torch_state_dict
from mae_flax.parity import scaled_error, strict_float32
from mae_flax.train import classify
from mae_flax.train.classify.mixup import mix
from mae_flax.train.data import labeled_video
from tests.train.test_video import moving_frames, write_video

LOGITS = 1e-5


def smoke(variant='video_smoke', **changes):
    config = classify_configs.get_config(variant)
    config.update(changes)
    config.compilation_cache = ''
    return config


SPEC = ModelSpec.from_dict(smoke().model.to_dict())  # 4 frames of 16px


def one_line(error):
    message = str(error.value)
    assert '\n' not in message
    return message


# --- the embedded motion clips -------------------------------------------------------------------------------------


def test_each_motion_moves_the_camera_its_way_and_its_mirror_in_time_plays_it_backwards():
    windows = {
        motion: labeled_video.motion_windows(motion, 400, 300, 8, 2, np.random.default_rng(0))
        for motion in labeled_video.MOTIONS
    }
    (side, left, top), (last_side, last_left, last_top) = windows['pan_right'][0], windows['pan_right'][-1]
    assert side == last_side and top == last_top and last_left - left >= 0.25 * 300  # sideways, to the right
    (side, left, top), (last_side, last_left, last_top) = windows['zoom_in'][0], windows['zoom_in'][-1]
    assert last_side <= 0.6 * side  # zoom in: the window shrinks about a fixed centre
    assert np.isclose(left + side / 2, last_left + last_side / 2) and np.isclose(
        top + side / 2, last_top + last_side / 2
    )
    # the same draws: a pan left is a pan right played backwards, a zoom out a zoom in, so that no single frame
    # (nor the set of frames) tells a motion from its mirror; only their order does
    assert windows['pan_left'] == windows['pan_right'][::-1]
    assert windows['zoom_out'] == windows['zoom_in'][::-1]
    for frames in windows.values():  # every window inside the photograph
        assert all(s > 0 and x >= 0 and y >= 0 and x + s <= 400 + 1e-9 and y + s <= 300 + 1e-9 for s, x, y in frames)


def test_the_validation_clips_are_fixed_and_come_from_photographs_the_training_never_sees():
    first, second = labeled_video.motion(SPEC.image_size, SPEC.channels), labeled_video.motion(16, 3)
    assert not set(first.train.images.names) & set(first.val.images.names)
    assert set(first.val.images.names) == set(photos.HELDOUT)
    counts = np.bincount(first.val.labels, minlength=4)
    assert list(counts) == [len(photos.HELDOUT) * labeled_video.VAL_PATHS] * 4  # every motion as often
    batches = [
        list(labeled_video.val_batches(data.val, SPEC, 2, 48, 0, 1)) for data in (first, second)
    ]  # 64 clips in 2 batches of 48, the second padded
    assert [len(batch['image']) for batch in batches[0]] == [48, 48]
    assert batches[0][1]['valid'].sum() == 16 and batches[0][0]['image'].shape[1:] == SPEC.input_shape
    for a, b in zip(*batches, strict=True):  # built twice, read twice: the same clips
        np.testing.assert_array_equal(a['image'], b['image'])
        np.testing.assert_array_equal(a['label'], b['label'])


def test_a_flipped_clip_of_a_pan_is_labelled_as_the_other_pan():
    data = labeled_video.motion(SPEC.image_size, SPEC.channels)
    config = smoke().data
    flipping = labeled_video.LabeledClip(data.train, SPEC, config)
    config.flip = False
    plain = labeled_video.LabeledClip(data.train, SPEC, config)
    seen = set()
    for element in range(8):  # photo 0 and 1, every motion
        for seed in range(3):
            a = flipping.random_map(element, np.random.default_rng(seed))
            b = plain.random_map(element, np.random.default_rng(seed))
            flipped = not np.array_equal(a['image'], b['image'])
            seen.add(flipped)
            if flipped:
                np.testing.assert_array_equal(a['image'], b['image'][:, :, ::-1])
                assert a['label'] == labeled_video.MIRRORED[b['label']]
            else:
                assert a['label'] == b['label'] == element % 4
    assert seen == {True, False}


def test_mixup_and_cutmix_on_clips_take_one_box_for_every_frame():
    clips = jnp.stack([jnp.full((4, 8, 8, 1), float(k)) for k in range(4)])  # clip k is all k
    targets = jax.nn.one_hot(jnp.arange(4), 4)
    config = smoke().mixup
    config.update(mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0)
    mixed_with = jax.jit(lambda key: mix(key, clips, targets, config))  # one compilation for the four draws
    for seed in range(4):
        mixed, mixed_targets = mixed_with(jax.random.key(seed))
        lam = float(mixed_targets[0, 0])
        frames = np.asarray(mixed[0])
        for frame in frames[1:]:
            np.testing.assert_array_equal(frame, frames[0])  # the same box in every frame
        assert np.isclose(frames.mean(), 3 * (1 - lam), atol=1e-5)  # lam is the area left


# --- a short fine-tuning run, its export ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def video_finetune(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('video_finetune') / 'run'
    return workdir, classify.train(smoke(), workdir)


def test_a_video_fine_tuning_run_exports_a_torch_classifier_with_the_flax_logits(video_finetune):
    workdir, summary = video_finetune
    assert summary['step'] == 8 and np.isfinite(summary['last_loss'])
    records = [json.loads(line) for line in (workdir / 'metrics.jsonl').open()]
    assert [r['step'] for r in records if 'val_top1' in r] == [4, 8]
    described = json.loads((workdir / 'best.safetensors.json').read_text())
    assert (
        described['classifier']['classes'] == list(labeled_video.MOTIONS) and described['classifier']['pool'] == 'mean'
    )
    twin = classify.torch_classifier(workdir / 'best.safetensors')
    spec = ModelSpec.from_dict(described['model'])
    family = families.get(spec.family)
    model = nnx.eval_shape(lambda: family.build_classifier(spec, num_classes=4, pool='mean', rngs=nnx.Rngs(0)))
    model = load_torch_state_dict(model, safetensors.numpy.load_file(workdir / 'best.safetensors'))
    model.eval()
    data = labeled_video.motion(spec.image_size, spec.channels)
    batch = next(labeled_video.val_batches(data.val, spec, 2, 64, 0, 1))  # the 64 validation clips
    clips = spec.normalize(batch['image'])  # (b, t, h, w, c)
    with strict_float32(), torch.no_grad():
        expected = twin(torch.from_numpy(clips).permute(0, 1, 4, 2, 3)).numpy()  # (b, t, c, h, w)
        actual = np.asarray(model(jnp.asarray(clips)))
    assert np.abs(expected).max() > 1e-3  # a head of zeros would hide everything
    assert scaled_error(expected, actual) <= LOGITS
    # and it is the run's best classifier: its top-1 on the validation clips is the one the run recorded
    accuracy = 100 * float((expected.argmax(-1) == batch['label']).mean())
    assert abs(accuracy - described['val_top1']) < 1e-4


# --- folders of video files ----------------------------------------------------------------------------------------


def kinetics_folder(root):
    """train/{a,b}/ with two videos each, val/{a,b}/ with one each, and an unreadable one in val/b."""
    for split, count in (('train', 2), ('val', 1)):
        for label, name in enumerate('ab'):
            (root / split / name).mkdir(parents=True)
            for k in range(count):
                write_video(root / split / name / f'{k}.mp4', moving_frames(12, seed=10 * label + k), size=24)
    (root / 'val' / 'b' / 'broken.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42 not a video')
    return root


def test_a_kinetics_folder_gives_labelled_clips_and_leaves_an_unreadable_validation_video_out(tmp_path):
    root = kinetics_folder(tmp_path / 'k')
    config = smoke()
    config.data.source = str(root)
    data = labeled_video.make_labeled(config.data, SPEC)
    assert data.classes == ('a', 'b') and list(data.train.labels) == [0, 0, 1, 1]
    assert list(data.val.labels) == [0, 1, 1]  # val/b/0.mp4 and val/b/broken.mp4
    iterator = labeled_video.train_iterator(data.train, config.data, SPEC, 0, 4, 0, 1)
    batch = next(iterator)
    assert batch['image'].shape == (4, *SPEC.input_shape) and batch['image'].dtype == np.uint8
    assert sorted(batch['label']) == [0, 0, 1, 1]  # an epoch of four: every video once
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        batches = list(labeled_video.val_batches(data.val, SPEC, 2, 4, 0, 1))
    assert len(batches) == 1 and list(batches[0]['valid']) == [1, 1, 0, 0]  # broken.mp4 left out, one padding row
    assert list(batches[0]['label'][:3]) == [0, 1, 1]
    named = [str(w.message) for w in caught if 'broken.mp4' in str(w.message)]
    assert len(named) == 1 and 'out of validation' in named[0]


def test_bad_video_sources_are_one_line(tmp_path):
    config = smoke()
    (tmp_path / 'flat').mkdir()
    write_video(tmp_path / 'flat' / 'a.mp4', moving_frames(6), size=24)
    config.data.source = str(tmp_path / 'flat')
    with pytest.raises(UsageError) as error:
        labeled_video.make_labeled(config.data, SPEC)
    assert 'expected the Kinetics layout' in one_line(error)

    root = kinetics_folder(tmp_path / 'k')
    (root / 'train' / 'c').mkdir()
    config.data.source = str(root)
    with pytest.raises(UsageError) as error:
        labeled_video.make_labeled(config.data, SPEC)
    assert "class 'c' has no videos" in one_line(error)
    (root / 'train' / 'c').rmdir()
    (root / 'val' / 'd').mkdir()
    write_video(root / 'val' / 'd' / 'x.mp4', moving_frames(6), size=24)
    with pytest.raises(UsageError) as error:
        labeled_video.make_labeled(config.data, SPEC)
    assert 'val/d is not a class of train/ (a, b)' in one_line(error)


def test_clips_for_an_image_model_and_images_for_a_video_model_are_one_line(tmp_path):
    image_config = classify_configs.get_config('smoke')
    image_config.data.source = labeled_video.MOTION
    with pytest.raises(UsageError) as error:
        classify.Classification(image_config, tmp_path / 'a').data(0, 1)
    assert "data source 'motion' holds videos and the model is an image model" in one_line(error)
    video_config = smoke()
    video_config.data.source = 'digits'
    with pytest.raises(UsageError) as error:
        classify.Classification(video_config, tmp_path / 'b').data(0, 1)
    assert "data source 'digits' holds images and the model is a video model (4 frames a clip)" in one_line(error)

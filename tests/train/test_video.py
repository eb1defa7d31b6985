"""mae-train with a video model (the videomae family): the embedded default and folders of video files, clips
sampled as VideoMAE samples them, resume, the frame strips, and the run's weights read by transformers and drawn by
mae-reconstruct with either backend.

Tolerances: a resumed run is bitwise the uninterrupted one (the same programs on the same device); transformers'
loss on the exported weights within 1e-5 relative of the Flax model's (float32 on the CPU, the same operations in
another order: observed <= 1e-6; a misplaced tubelet or bias is off by 1e-2 or more).
"""

import re
import shutil
import warnings

import av
import jax
import numpy as np
import pytest
import torch
from PIL import Image

from mae_core.errors import UsageError
from mae_flax.cli import convert, parity, reconstruct
from mae_flax.configs import mae
from mae_flax.files import videos
from mae_flax.model_files import read_model
from mae_flax.train import pretrain
from mae_flax.train.data import video
from parity_tests.oracles import transformers
from tests.train.conftest import losses


def write_video(path, frames, size=32, rate=25):
    """An mpeg4 video whose frame k is the uint8 (size, size, 3) `frames(k)`; returns the path."""
    with av.open(str(path), 'w') as out:
        stream = out.add_stream('mpeg4', rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = 'yuv420p'
        stream.bit_rate = 4_000_000  # near-lossless for flat frames: the sampling test reads their gray levels
        for k in range(len(frames)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frames[k], format='rgb24')):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def gray_frames(count, size=32):
    """Frame k flat at gray level 4k: which frame a decoder returned is read off its mean."""
    return [np.full((size, size, 3), 4 * k, np.uint8) for k in range(count)]


def moving_frames(count, size=32, seed=0):
    """A texture sliding one pixel a frame."""
    texture = (np.random.default_rng(seed).random((size, size + count, 3)) * 255).astype(np.uint8)
    return [np.ascontiguousarray(texture[:, k : k + size]) for k in range(count)]


def _smoke(steps=12, **data):
    config = mae.get_config('video_smoke')
    config.update(total_steps=steps, compilation_cache='')
    config.data.update(**data)
    return config


@pytest.fixture(scope='module')
def video_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('video') / 'run'
    summary = pretrain.train(_smoke(), workdir)
    return workdir, summary


def test_frames_are_sampled_every_stride_and_a_short_video_repeats_its_last(tmp_path):
    path = write_video(tmp_path / 'gray.mp4', gray_frames(30))
    assert videos.frame_count(path) == 30
    frames = videos.decode_frames(path, [3, 7, 11, 40], channels=3)
    levels = [float(np.asarray(frame).mean()) for frame in frames]
    np.testing.assert_allclose(levels, [12, 28, 44, 116], atol=2)  # frame 40 is past the end: the last, 29
    assert videos.central_indices(30, 4, 4) == [8, 12, 16, 20]  # the middle 13 frames: 8 before, 9 after
    # a training clip: num_frames every frame_stride from a random start, one crop for all of its frames
    source = video.VideoFolder(tmp_path, channels=3)
    rng = np.random.default_rng(0)
    clip_levels = [float(np.asarray(frame).mean()) / 4 for frame in source.frames(0, 4, 3, rng)]
    start = round(clip_levels[0])
    np.testing.assert_allclose(clip_levels, [start, start + 3, start + 6, start + 9], atol=0.5)


def test_an_unreadable_video_is_skipped_naming_it_and_none_readable_is_one_line(tmp_path):
    write_video(tmp_path / 'a.mp4', moving_frames(12))
    (tmp_path / 'b.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42 not a video')
    source = video.VideoFolder(tmp_path, channels=3)
    with pytest.warns(UserWarning, match=r'skipping unreadable video .*b\.mp4'):
        frames = source.frames(1, 4, 2, np.random.default_rng(0))  # item 1 is b.mp4: a.mp4's clip instead
    assert len(frames) == 4 and frames[0].size == (32, 32)
    (tmp_path / 'a.mp4').write_bytes(b'')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(UsageError, match='none of the 2 videos'):
            video.VideoFolder(tmp_path, channels=3).frames(0, 4, 2, np.random.default_rng(0))
    (tmp_path / 'nothing').mkdir()
    with pytest.raises(UsageError, match='no videos in'):
        video.VideoFolder(tmp_path / 'nothing', channels=3)
    with pytest.raises(UsageError, match=r'cannot read video .*b\.mp4'):
        videos.read_clip(tmp_path / 'b.mp4', 4, 2, 16, 3)


def test_a_video_run_draws_frame_strips_and_resumes_bitwise(video_run, tmp_path, capsys):
    workdir, summary = video_run
    assert summary['step'] == 12 and np.isfinite(summary['last_loss'])
    strips = Image.open(workdir / 'images' / 'step_000012.png')
    # 4 clips x 3 strips of 16px frames, 4 frames a strip, drawn 6x larger
    assert strips.size == (4 * 16 * 6, 4 * 3 * 16 * 6)
    resumed = tmp_path / 'resumed'
    shutil.copytree(workdir, resumed)
    shutil.rmtree(resumed / 'checkpoints' / '12')  # as if stopped after step 8's checkpoint
    again = pretrain.train(_smoke(), resumed)
    assert again['steps_run'] == 4
    assert losses(resumed) == losses(workdir)
    lines = capsys.readouterr().err.splitlines()  # stderr is not a terminal: plain lines, counting clips
    assert any(line.startswith('step 12/12: loss ') and 'clips/s' in line for line in lines), lines[-3:]


def test_a_folder_of_video_files_trains(tmp_path):
    folder = tmp_path / 'videos'
    folder.mkdir()
    for k in range(3):
        write_video(folder / f'clip{k}.mp4', moving_frames(20, seed=k))
    summary = pretrain.train(_smoke(4, source=str(folder)), tmp_path / 'run')
    assert summary['step'] == 4 and np.isfinite(summary['last_loss']) and summary['skipped_images'] == 0


def test_the_run_s_weights_give_transformers_the_same_loss_and_reconstruct_in_both_backends(
    video_run, tmp_path, capsys
):
    workdir, _ = video_run
    assert convert.main([str(workdir), str(tmp_path / 'hf'), '--to', 'hf']) == 0
    model, info = transformers().VideoMAEForPreTraining.from_pretrained(tmp_path / 'hf', output_loading_info=True)
    assert not any(info[name] for name in ('missing_keys', 'unexpected_keys', 'mismatched_keys')), info
    loaded = read_model(workdir)
    spec = loaded.spec
    rng = np.random.default_rng(0)
    clips = spec.normalize(rng.integers(0, 256, (2, *spec.input_shape), np.uint8))
    mask = np.zeros((2, 32), bool)
    mask[:, [0, 1, 2, 5, 8, 9, 10, 13, 16, 17, 18, 21, 24, 25, 26, 29]] = True  # 8 of 16 per frame-group, tubes
    with jax.default_matmul_precision('highest'):
        flax_loss, _ = loaded.model(clips, bool_masked_pos=mask)
    with torch.no_grad():
        out = model.eval()(
            pixel_values=torch.from_numpy(np.ascontiguousarray(clips.transpose(0, 1, 4, 2, 3))),
            bool_masked_pos=torch.from_numpy(mask),
        )
    assert out.loss.item() == pytest.approx(float(flax_loss), rel=1e-5)

    path = write_video(tmp_path / 'clip.mp4', moving_frames(30))
    capsys.readouterr()
    printed = {}
    for backend in ('flax', 'torch'):
        out_png = tmp_path / f'{backend}.png'
        args = [str(workdir), str(path), '--out', str(out_png), '--frame_stride', '2', '--backend', backend]
        assert reconstruct.main(args) == 0
        printed[backend] = capsys.readouterr().out
        assert Image.open(out_png).size == (4 * 16 * 6, 3 * 16 * 6)
    assert 'clips of 4 frames (every 2)' in printed['flax']
    flax_loss, torch_loss = (re.search(r'^loss (\S+)', printed[backend], re.M)[1] for backend in ('flax', 'torch'))
    assert flax_loss == torch_loss  # printed to 4 decimals: the same clip, mask and weights in both backends


def test_mae_parity_passes_on_the_video_run_with_random_clips_and_video_files(video_run, tmp_path, capsys):
    workdir, _ = video_run
    assert parity.main([str(workdir), '--grads']) == 0
    assert capsys.readouterr().out.strip().endswith('all pass')
    folder = tmp_path / 'videos'
    folder.mkdir()
    write_video(folder / 'a.mp4', moving_frames(24))
    assert parity.main([str(workdir), '--images', str(folder), '--batch', '1']) == 0
    out = capsys.readouterr().out
    assert '1 images from' in out and out.strip().endswith('all pass')
    # a HuggingFace folder: the torch twin gets upstream's names through the converter
    assert convert.main([str(workdir), str(tmp_path / 'hf'), '--to', 'hf']) == 0
    assert parity.main([str(tmp_path / 'hf')]) == 0
    assert capsys.readouterr().out.strip().endswith('all pass')

"""Faults and bad input at the entry points of mae-train and the tools that read its workdirs: one line each, exit 2
for the user's mistakes, nothing lost, no silent wrong answer. One writer per workdir; checkpoints set aside only
when damaged; a kept checkpoint is a good one; read-only folders; damaged weights files."""

import json
import shutil
import struct
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest
import safetensors.numpy
from PIL import Image

from mae_core.errors import UsageError
from mae_flax.cli import convert, reconstruct
from mae_flax.configs import classify as classify_config
from mae_flax.configs import mae
from mae_flax.train import classify, pretrain, workdir
from tests.train.conftest import REPO, SMOKE, environment, losses

FIXTURES = REPO / 'tests' / 'fixtures' / 'transformers4'


def _smoke(steps, **optim):
    config = mae.get_config('smoke')
    config.update(total_steps=steps, log_every=2, num_eval_images=0, compilation_cache='')
    config.checkpoint.every_steps = 2
    config.optim.update(**optim)
    return config


def _listing(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob('*'))


def test_a_second_run_on_a_live_workdir_refuses_naming_the_first_and_writes_nothing(smoke_run, tmp_path):
    run = tmp_path / 'run'
    shutil.copytree(smoke_run[0], run)
    before = (run / 'metrics.jsonl').read_text()
    with workdir.hold(run, 'mae-train'):  # the first run, alive
        holder = json.loads((run / workdir.LOCK).read_text())
        with pytest.raises(UsageError, match=rf'is being written by another run \(mae-train, pid {holder["pid"]} on '):
            pretrain.train(_smoke(16), run)
    assert (run / 'metrics.jsonl').read_text() == before
    assert (run / workdir.LOCK).read_text() == ''  # released: the next run takes it without a word


def test_wait_waits_for_the_live_run_and_a_dead_run_s_lock_is_taken_over(tmp_path, caplog):
    run = tmp_path / 'run'
    holding = threading.Event()

    def first():
        with workdir.hold(run, 'mae-train'):
            holding.set()
            time.sleep(0.5)

    start = time.monotonic()
    thread = threading.Thread(target=first)
    thread.start()
    holding.wait()
    with workdir.hold(run, 'mae-finetune', wait=True):
        assert time.monotonic() - start >= 0.5  # not before the first run let go
    thread.join()
    assert 'waiting for it to end (--wait)' in caplog.text
    # a run killed with SIGKILL leaves its line in the lock file, but not the kernel's lock
    (run / workdir.LOCK).write_text(json.dumps(dict(command='mae-train', pid=999999, host='gone', started='then')))
    with workdir.hold(run, 'mae-train'):
        pass
    assert 'took over the lock' in caplog.text and 'pid 999999 on gone' in caplog.text


def test_resuming_with_another_model_size_is_one_line_and_renames_nothing(smoke_run, tmp_path):
    run = tmp_path / 'run'
    shutil.copytree(smoke_run[0], run)
    before = _listing(run)
    config = _smoke(16)
    config.model.encoder.dim = 64
    with pytest.raises(UsageError, match=r'config.model.encoder.dim is 32 in its config.json, the command says 64'):
        pretrain.train(config, run)
    assert _listing(run) == before  # no checkpoint set aside as damaged, nothing trained


def test_a_hand_edited_config_json_that_is_not_json_is_one_line(smoke_run, tmp_path, capsys):
    run = tmp_path / 'run'
    shutil.copytree(smoke_run[0], run)
    (run / 'config.json').write_text('{"model": {"family": "vit_pytorch",')  # cut off
    with pytest.raises(UsageError, match=r'config.json is not valid JSON'):
        pretrain.train(_smoke(16), run)
    with pytest.raises(UsageError, match=r'config.json is not valid JSON'):
        convert.main([str(run), str(tmp_path / 'out.pt')])
    assert not (tmp_path / 'out.pt').exists()


def test_a_diverging_run_keeps_only_good_checkpoints_and_a_rerun_with_a_lower_lr_continues(tmp_path):
    run = tmp_path / 'run'
    pretrain.train(_smoke(4), run)
    with pytest.raises(FloatingPointError, match=r'step 4\) is kept in .*rerun with a lower learning rate'):
        pretrain.train(_smoke(8, base_lr=1e6), run)
    assert sorted(int(p.name) for p in (run / 'checkpoints').iterdir() if p.name.isdigit()) == [2, 4]
    _, step, _ = workdir.restore_model(run)
    assert step == 4
    again = pretrain.train(_smoke(12), run)  # the recipe's lr again: continues from step 4
    assert again['step'] == 12 and again['steps_run'] == 8
    # as if it had never diverged: the same two runs without the diverged one between them, bitwise (the diverged
    # steps' lines rewritten); the schedule of a run depends on its total_steps, so the twin runs 4 then 12 too
    twin = tmp_path / 'twin'
    pretrain.train(_smoke(4), twin)
    pretrain.train(_smoke(12), twin)
    resumed = {step: loss for step, loss in losses(run).items() if step > 4}
    assert resumed == {step: loss for step, loss in losses(twin).items() if step > 4}
    assert sorted(resumed) == [6, 8, 10, 12] and max(resumed.values()) < 2  # finite, the loss of an MAE learning


def _damaged_files(folder):
    """Weights files as interrupted downloads and broken disks leave them."""
    good = {'pos_embedding': np.zeros((1, 17, 32), np.float32)}
    safetensors.numpy.save_file(good, folder / 'good.safetensors')
    data = (folder / 'good.safetensors').read_bytes()
    (folder / 'truncated.safetensors').write_bytes(data[: len(data) // 2])
    (folder / 'huge_header.safetensors').write_bytes(struct.pack('<Q', 2**62) + b'{}')
    (folder / 'empty.pth').write_bytes(b'')
    with zipfile.ZipFile(folder / 'garbage.pth', 'w') as archive:
        archive.writestr('archive/data.pkl', b'\x00\x01 not a pickle')
    return ['truncated.safetensors', 'huge_header.safetensors', 'empty.pth', 'garbage.pth']


def test_a_damaged_weights_file_is_one_line_naming_it_at_every_entry_point(tmp_path):
    image = tmp_path / 'image.png'
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    for name in _damaged_files(tmp_path):
        path = tmp_path / name
        with pytest.raises(UsageError, match=rf'{name}.*(empty file|not a readable|not a torch.save)') as caught:
            pretrain.train(_smoke(4), tmp_path / f'run_{name}', init_from=path)
        assert '\n' not in str(caught.value)
        assert not (tmp_path / f'run_{name}').exists()
        # the same file inside a HuggingFace folder, given to mae-convert
        folder = tmp_path / f'hf_{name}'
        folder.mkdir()
        shutil.copyfile(FIXTURES / 'vitmae_from_config' / 'config.json', folder / 'config.json')  # transformers 4's
        shutil.copyfile(path, folder / ('model.safetensors' if name.endswith('safetensors') else 'pytorch_model.bin'))
        damaged = rf'{folder.name}.*(empty file|not a readable|not a torch.save)'
        with pytest.raises(UsageError, match=damaged):
            convert.main([str(folder), str(tmp_path / 'out.safetensors')])
        # and to the other commands that read weights: mae-reconstruct, mae-finetune --init_from
        with pytest.raises(UsageError, match=damaged):
            reconstruct.main([str(folder), str(image), '--out', str(tmp_path / 'grid.png')])
        with pytest.raises(UsageError, match=damaged):
            classify.train(classify_config.get_config('smoke'), tmp_path / f'ft_{name}', init_from=folder)
        assert not (tmp_path / f'ft_{name}').exists()
    assert not (tmp_path / 'out.safetensors').exists() and not (tmp_path / 'grid.png').exists()


def _read_only(folder, command):
    """`command` run with `folder` mounted read-only (a user and mount namespace: no privileges needed)."""
    mount = f'mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && exec "$@"'
    return subprocess.run(
        ['unshare', '-rm', 'sh', '-c', mount, 'sh', *command],
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_a_read_only_workdir_or_out_folder_is_one_line_and_the_files_stay(smoke_run, tmp_path):
    run = tmp_path / 'run'
    shutil.copytree(smoke_run[0], run)
    before = _listing(run)
    result = _read_only(
        run, [sys.executable, '-m', 'mae_flax.train', SMOKE, f'--workdir={run}', '--config.total_steps=16']
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f'mae-train: error: cannot write in --workdir {run}')
    assert _listing(run) == before

    out = tmp_path / 'out'
    out.mkdir()
    result = _read_only(out, [sys.executable, '-m', 'mae_flax.cli.convert', str(run), str(out / 'mae.pt')])
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith('mae-convert: error: cannot write ')
    assert not any(out.iterdir())


def test_a_log_without_a_terminal_has_a_plain_line_per_log_window(smoke_run):
    # the smoke run's stderr is a pipe: no progress bar's carriage-return fragments, a line every log_every (1) steps
    stderr = smoke_run[1].stderr
    lines = [line for line in stderr.splitlines() if line.startswith('step ')]
    assert '\r' not in stderr and len(lines) == 12
    assert lines[-1].startswith('step 12/12: loss ') and 'images/s' in lines[-1] and 'eval loss' in lines[-1]

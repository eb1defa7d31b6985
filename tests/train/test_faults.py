"""Faults a user's machine causes: Ctrl-C, a damaged checkpoint, a full disk. Each has one clear outcome, and no
checkpoint that was good is ever lost."""

import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mae_flax.cli import convert
from mae_flax.convert import to_torch_state_dict
from mae_flax.train.workdir import restore_model
from tests.train.conftest import REPO, SMOKE, environment, finish, losses, start, train

SIGNAL_AT = str(REPO / 'tests/train/signal_at.py')


def checkpoint_steps(workdir):
    return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())


def test_ctrl_c_saves_a_checkpoint_and_exits_130_then_the_run_resumes_bitwise(smoke_run, tmp_path):
    flags = [SMOKE, f'--workdir={tmp_path}']
    stopped = train(flags, script=[SIGNAL_AT, 'SIGINT', '6'], check=False)
    assert stopped.returncode == 130 and 'Traceback' not in stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1] == (
        'mae-train: stopped by Ctrl-C at step 6, checkpoint saved; rerun to resume'
    )
    assert checkpoint_steps(tmp_path)[-1] == 6
    assert 'done: step 12 (6 this run)' in train(flags).stdout
    assert losses(tmp_path) == losses(smoke_run[0])


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    stopped = train([SMOKE, f'--workdir={tmp_path}'], script=[SIGNAL_AT, 'SIGINT2', '6'], check=False)
    assert stopped.returncode == 130 and 'Traceback' not in stopped.stderr
    assert 'second Ctrl-C: stopping now, without a checkpoint' in stopped.stderr
    assert 6 not in checkpoint_steps(tmp_path)


def _truncate_an_array_file(checkpoint):
    # every array data file cut short: which of them holds the parameters (what the tools restore) and which only
    # the optimizer state varies from run to run with ocdbt's packing
    for path in (checkpoint / 'state').rglob('d/*'):
        path.write_bytes(path.read_bytes()[:10])


def _remove_the_metadata(checkpoint):
    (checkpoint / 'state' / '_METADATA').unlink()


def _garble_the_iterator_state(checkpoint):
    for path in (checkpoint / 'data').rglob('*'):
        if path.is_file():
            path.write_text('{not json')


@pytest.mark.parametrize(
    ('damage', 'weights_damaged'),
    [(_truncate_an_array_file, True), (_remove_the_metadata, True), (_garble_the_iterator_state, False)],
)
def test_a_damaged_latest_checkpoint_is_skipped_named_and_kept(smoke_run, tmp_path, damage, weights_damaged):
    workdir = tmp_path / 'run'
    shutil.copytree(smoke_run[0], workdir)
    damage(workdir / 'checkpoints' / '12')
    # the tools read the newest checkpoint whose weights restore (they need no iterator), saying which they skipped
    if weights_damaged:
        with pytest.warns(UserWarning, match=r'skipping damaged checkpoint .*checkpoints/12 '):
            assert convert.main([str(workdir), str(tmp_path / 'mae.pt')]) == 0
    else:
        assert convert.main([str(workdir), str(tmp_path / 'mae.pt')]) == 0
    assert (workdir / 'checkpoints' / '12').is_dir()
    # a run goes on from step 8 and gives the uninterrupted run's losses; the damaged checkpoint is kept aside
    resumed = train([SMOKE, f'--workdir={workdir}'])
    warnings = [line for line in resumed.stderr.splitlines() if 'skipping damaged checkpoint' in line]
    assert len(warnings) == 1 and warnings[0].startswith('mae-train: warning: ') and 'kept as 12.damaged' in warnings[0]
    assert 'Traceback' not in resumed.stderr and 'Exception ignored' not in resumed.stderr
    assert 'done: step 12 (4 this run)' in resumed.stdout
    assert (workdir / 'checkpoints' / '12.damaged').is_dir()
    assert losses(workdir) == losses(smoke_run[0])


def _small_files_only():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))  # under any checkpoint's _METADATA


def test_a_full_disk_stops_at_the_first_failed_save_with_one_line_and_no_partial_files(tmp_path):
    # no drive is mounted: a file-size limit makes every checkpoint write fail as a full disk would
    flags = [SMOKE, f'--workdir={tmp_path}', '--config.num_eval_images=0']
    command = [sys.executable, '-m', 'mae_flax.train', *flags]
    result = subprocess.run(
        command, cwd=REPO, env=environment(), capture_output=True, text=True, preexec_fn=_small_files_only, timeout=240
    )
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1, result.stderr[-2000:]
    assert last.startswith('mae-train: could not write the checkpoint of step 4 (File too large')
    assert 'the last good checkpoint is none yet' in last and 'GiB free there' in last
    assert 'OUT_OF_RANGE' not in result.stderr  # orbax's hundreds of lines of tracebacks are not shown
    assert not list((tmp_path / 'checkpoints').glob('*tmp*')) and checkpoint_steps(tmp_path) == []
    assert max(losses(tmp_path)) < 12  # it stopped, it did not train on without checkpoints


def _kill_after(process, metrics, new_lines, delay):
    """SIGKILL once `metrics` has `new_lines` more lines (steps logged) and `delay` more seconds have passed."""
    start_lines = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    while process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= start_lines + new_lines:
            time.sleep(delay)
            process.kill()
            return True
        time.sleep(0.02)
    return False


def test_killed_at_twelve_random_points_the_run_ends_bitwise_as_an_uninterrupted_one(smoke_run, tmp_path):
    # SIGKILL at seeded random points: before one of the steps this run has left (so it never just finishes) and up
    # to 0.1 s later, which lands in start-up, in steps and in the background writes of checkpoints (every 4
    # steps) alike; each restart resumes. Then the run is left to finish.
    rng = np.random.default_rng(20261129)
    flags = [SMOKE, f'--workdir={tmp_path}']
    kills = 0
    while kills < 12:  # 20 before the suite reached its time budget; each restart costs ~2.5 s
        done = max(checkpoint_steps(tmp_path), default=0) if (tmp_path / 'checkpoints').is_dir() else 0
        process = start(flags)
        killed = _kill_after(process, tmp_path / 'metrics.jsonl', int(rng.integers(0, 12 - done)), rng.uniform(0, 0.1))
        result = finish(process)
        kills += killed
        if not killed:  # it outran the kill: a complete run, as good a test of the end state
            assert result.returncode == 0, result.stderr[-2000:]
            break
    finished = train(flags)
    assert 'done: step 12' in finished.stdout or 'nothing to do' in finished.stdout
    assert losses(tmp_path) == losses(smoke_run[0])
    reference, _, _ = restore_model(smoke_run[0])
    resumed, step, _ = restore_model(tmp_path)
    assert step == 12
    expected, actual = to_torch_state_dict(reference), to_torch_state_dict(resumed)
    for key, value in expected.items():
        np.testing.assert_array_equal(actual[key], value, err_msg=key)

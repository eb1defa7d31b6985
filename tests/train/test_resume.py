"""Faults: SIGKILL, SIGTERM (preemption), a half-written checkpoint, a NaN loss."""

import logging
import math
import shutil
import signal

import jax
import pytest

from mae_core.errors import UsageError
from mae_flax.configs import mae
from mae_flax.train import loop, pretrain
from mae_flax.train.model_state import copy_to_host
from mae_flax.train.workdir import restore_model
from tests.train.conftest import REPO, SMOKE, losses, train

SIGNAL_AT = str(REPO / 'tests/train/signal_at.py')


def checkpoint_steps(workdir):
    return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())


def test_sigkill_then_sigterm_then_finish_gives_the_same_losses_bitwise(smoke_run, tmp_path):
    reference, _ = smoke_run
    flags = [SMOKE, f'--workdir={tmp_path}']

    # a crash after step 6: the checkpoint of step 4 may still have been being written
    killed = train(flags, script=[SIGNAL_AT, 'SIGKILL', '6'], check=False)
    assert killed.returncode == -signal.SIGKILL
    assert max(losses(tmp_path)) == 6

    # a preemption notice at step 10: the run saves a checkpoint there and exits cleanly
    preempted = train(flags, script=[SIGNAL_AT, 'SIGTERM', '10'])
    assert checkpoint_steps(tmp_path)[-1] == 10
    assert '(12 this run)' not in preempted.stdout  # it resumed after the crash

    finished = train(flags)
    assert 'done: step 12 (2 this run)' in finished.stdout
    # same program, same inputs, same CPU: no reason for any difference, so none is tolerated
    assert losses(tmp_path) == losses(reference)


def test_half_written_checkpoint_is_never_restored(smoke_run, tmp_path):
    workdir = tmp_path / 'run'
    shutil.copytree(smoke_run[0], workdir)
    # what a crash during the save of step 16 leaves: orbax's temporary directory, never renamed into place
    partial = workdir / 'checkpoints' / '16.orbax-checkpoint-tmp-1234'
    shutil.copytree(workdir / 'checkpoints' / '12', partial)
    shutil.rmtree(partial / 'data')
    _, step, _ = restore_model(workdir)
    assert step == 12


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    config = mae.get_config('smoke')
    config.optim.base_lr = 1e30  # the first update blows the parameters up; the next loss overflows
    config.checkpoint.every_steps = 1
    # the weights' check before a save, or the loss, whichever sees it first, names the step
    stopped = r'(loss is (nan|inf) at step (\d+) \(first non-finite|the weights at step (\d+) are )'
    with pytest.raises(FloatingPointError, match=stopped) as error:
        pretrain.train(config, tmp_path)
    bad_step = int(str(error.value).split(' at step ')[1].split(' ')[0])
    assert checkpoint_steps(tmp_path)[-1] == bad_step - 1
    assert all(math.isfinite(loss) for step, loss in losses(tmp_path).items() if step < bad_step)


def test_metrics_are_fetched_once_per_log_window_a_nan_stops_the_run_and_a_restart_loads_the_cached_step(
    tmp_path, monkeypatch, caplog
):
    fetched = []  # the steps' count of each device -> host fetch of metrics

    def counting(tree):
        if isinstance(tree, list):  # the steps' metrics (the step counter is copied alone)
            fetched.append(len(tree))
        return copy_to_host(tree)

    monkeypatch.setattr(loop, 'copy_to_host', counting)
    config = mae.get_config('smoke')
    config.update(total_steps=8, log_every=4, image_every=8, compilation_cache=str(tmp_path / 'cache'))
    config.checkpoint.every_steps = 8
    previous = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)  # the smoke step compiles in under 1 s
    try:
        with caplog.at_level(logging.INFO):
            summary = pretrain.train(config, tmp_path / 'finite')
            assert fetched == [4, 4]  # not once per step
            assert summary['step'] == 8 and math.isfinite(summary['last_loss'])
            assert 'cached in' in caplog.text and 'loaded the compiled step' not in caplog.text

            # the same run restarted (a new jit, as in a new process): its step comes from the cache
            caplog.clear()
            pretrain.train(config, tmp_path / 'restarted')
            cache = tmp_path / 'cache'
            assert f'loaded the compiled step from the persistent compilation cache {cache}' in caplog.text
    finally:
        jax.config.update('jax_persistent_cache_min_compile_time_secs', previous)
    assert jax.config.jax_compilation_cache_dir is None  # the caller's process is left as it was

    fetched.clear()
    config.optim.base_lr = 1e30  # non-finite within the first window; seen at its end, step 4
    with pytest.raises(FloatingPointError, match=r'loss is (nan|inf) at step [23] \(first non-finite of steps 1-4'):
        pretrain.train(config, tmp_path / 'diverges')
    assert fetched == [4]
    assert not checkpoint_steps(tmp_path / 'diverges')


def test_a_run_resumes_only_with_the_layout_it_was_started_with(smoke_run, tmp_path):
    workdir = tmp_path / 'run'
    shutil.copytree(smoke_run[0], workdir)
    config = mae.get_config('smoke')
    config.update(total_steps=16, scan_layers=False)
    with pytest.raises(
        UsageError, match=r'was trained with scan_layers=True: resume it with --config.scan_layers=True'
    ):
        pretrain.train(config, workdir)

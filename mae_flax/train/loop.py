"""The training loop every task shares (mae-train's pretraining, mae-finetune's and mae-linprobe's classification),
top to bottom: mesh, data, the step program, the start (1. resume this workdir, 2. initialise from --init_from,
3. scratch), the jitted step with donated state, metrics fetched once per log window with the NaN check there,
evaluations, checkpoints with the data iterator's position, SIGTERM and Ctrl-C, the summary.

A task (train/pretrain.py's Pretraining, train/classify/task.py's Classification) says what is trained:
`config`, `command`, `init_from`, `data(process_index, process_count)` -> the training iterator,
`program(mesh)` -> a steps.StepProgram, `initialize(state)` -> the state with --init_from's weights,
`evaluates(step, last)`, `evaluate(state, step, workdir, is_main)` -> metrics, `summarize(records, workdir,
is_main)` -> summary fields and `summary_line(summary, workdir)`.

The same code runs on one CPU and on a TPU pod: every array is a global jax.Array over one (data, fsdp) mesh, each
process feeds only its rows of the batch, and only process 0 writes logs and images.
"""

import collections
import logging
import math
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from mae_core.errors import UsageError
from mae_flax.train import compilation_cache, report, sharding, state_checkpoints, workdir
from mae_flax.train.model_state import copy_to_host, with_shardings


def run(task, workdir_path, *, wait=False):
    """Trains `task` in `workdir_path` (resuming from its latest checkpoint), holding the workdir's lock (another
    live run there: a UsageError naming it, or with `wait` a wait for it); returns the summary dict."""
    config = task.config
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    check_batch(config, mesh)
    train_iter = task.data(jax.process_index(), jax.process_count())  # a bad source fails before anything is made
    try:
        with (
            workdir.hold(workdir_path, task.command, wait=wait),
            compilation_cache.enabled(config.compilation_cache, workdir_path) as cache,
        ):
            return _run(task, config, workdir_path, cache, mesh, train_iter)
    finally:
        train_iter.close()  # stops the data worker processes


def check_batch(config, mesh):
    batch_devices = mesh.shape['data'] * mesh.shape['fsdp']
    unit = config.grad_accum_steps * batch_devices
    if config.batch_size % unit or config.batch_size % jax.process_count():
        raise UsageError(
            f'config.batch_size {config.batch_size} must be divisible by grad_accum_steps {config.grad_accum_steps} x '
            f'{batch_devices} batch devices (mesh data x fsdp) = {unit}, and by {jax.process_count()} processes'
        )


def log_line(step, total_steps, record, items='images'):
    """The plain line a run without a terminal logs every log_every steps; `items`: what a batch holds."""
    line = f'step {step}/{total_steps}: loss {record["loss"]:.4f}, {record["images_per_sec"]:.0f} {items}/s'
    if 'eval_loss' in record:
        line += f', eval loss {record["eval_loss"]:.4f}'
    if 'blur_ratio' in record:
        model = record.get('heldout_ratio')
        line += f', held-out photos {"n/a" if model is None else f"{model:.2f}"} (blur {record["blur_ratio"]:.2f})'
    if 'val_top1' in record:
        line += f', val top-1 {record["val_top1"]:.2f}%'
    return line


class Metrics:
    """The steps' metrics, kept on the device until `fetch` copies the pending ones to the host in one wait; the
    losses of this run's first and last logging windows, for the summary. A non-finite loss raises
    FloatingPointError naming its step (the checkpoints saved so far were fetched and checked before they were
    written)."""

    def __init__(self, log_every, manager):
        self.log_every, self.manager = log_every, manager
        self.pending = []  # (step, metrics on the device) not fetched yet: no wait for the device between log steps
        self.last_window = collections.deque(maxlen=log_every)
        self.first_window = []

    def add(self, step, metrics):
        self.pending.append((step, metrics))

    def fetch(self):
        """The last pending step's metrics as floats (None if none is pending), after checking every pending one."""
        if not self.pending:
            return None
        steps = [step for step, _ in self.pending]
        records = [
            {name: float(value) for name, value in m.items()} for m in copy_to_host([m for _, m in self.pending])
        ]
        self.pending.clear()
        for step, record in zip(steps, records, strict=True):
            if not math.isfinite(record['loss']):
                self.manager.wait_until_finished()
                good = self.manager.latest_step()
                kept = f'the last good checkpoint (step {good}) is kept in' if good else 'no checkpoint yet in'
                raise FloatingPointError(
                    f'loss is {record["loss"]} at step {step} (first non-finite of steps {steps[0]}-{steps[-1]}, '
                    f'fetched every log_every={self.log_every}): stopping; {kept} {self.manager.directory}'
                    + (': rerun with a lower learning rate to continue from it' if good else '')
                )
            self.last_window.append(record['loss'])
            if len(self.first_window) < self.log_every:
                self.first_window.append(record['loss'])
        return records[-1]


def _start(task, config, workdir_path, program, manager, train_iter, is_main):
    """The state to train from: 1. this workdir's latest checkpoint (with the data iterator's position), 2. else
    --init_from's weights, 3. else a fresh initialisation. Writes the run's config.json."""
    workdir.check_resumable(config, workdir_path)
    if is_main:
        workdir.write_config(workdir_path, config)
    if manager.latest_step() is not None:
        if task.init_from:
            logging.warning(
                '%s has a checkpoint: resuming from it, not from --init_from=%s', workdir_path, task.init_from
            )
        abstract = with_shardings(program.abstract_state, program.shardings)
        return state_checkpoints.restore(manager, abstract, train_iter, set_aside=True)[0]
    return task.initialize(jax.jit(program.init, out_shardings=program.shardings)())


def _run(task, config, workdir_path, cache, mesh, train_iter):
    is_main = jax.process_index() == 0
    logging.info('mesh %s over %d processes', dict(mesh.shape), jax.process_count())
    program = task.program(mesh)
    manager = state_checkpoints.make_manager(workdir_path / workdir.CHECKPOINTS, config.checkpoint)
    state = _start(task, config, workdir_path, program, manager, train_iter, is_main)
    num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(program.abstract_state['params']))
    logging.info('%.2fM parameters, %s compute', num_params / 1e6, config.dtype)

    start = int(copy_to_host(state['step']))
    writer = report.MetricsWriter(workdir_path) if is_main else None
    preemption = state_checkpoints.Preemption(manager, jax.process_count())
    # a bar on a terminal; a plain line every log_every steps where stderr is a file or a pipe (a job's log), not
    # carriage-return fragments of a bar
    bar = is_main and sys.stderr.isatty()
    progress = tqdm(total=config.total_steps, initial=start, unit='step', disable=not bar, dynamic_ncols=True)
    if start == 0 and task.evaluates(0, last=False):
        initial = task.evaluate(state, 0, workdir_path, is_main)
        if writer:
            writer.write(0, initial)
    metrics_log = Metrics(config.log_every, manager)
    window_start, window_steps, steady_start = time.perf_counter(), 0, None

    hits_before = compilation_cache.EVENTS['cache_hits']
    try:
        for step in range(start, config.total_steps):
            batch = sharding.global_batch(next(train_iter), mesh)
            call_start = time.perf_counter()
            state, metrics = program.train_step(state, batch)  # the first call compiles, or loads from the cache
            if step == start:
                compilation_cache.log_first_step(cache, hits_before, time.perf_counter() - call_start)
            done = step + 1
            metrics_log.add(done, metrics)
            steady_start = steady_start or time.perf_counter()  # after the first step, which compiles
            window_steps += 1
            progress.update(1)

            last = done == config.total_steps
            if done % config.log_every == 0 or last:
                record = metrics_log.fetch()
                record['images_per_sec'] = window_steps * config.batch_size / (time.perf_counter() - window_start)
                window_start, window_steps = time.perf_counter(), 0
                if task.evaluates(done, last):
                    record |= task.evaluate(state, done, workdir_path, is_main)
                if writer:
                    writer.write(done, record)
                progress.set_postfix(loss=f'{record["loss"]:.4f}', img_s=f'{record["images_per_sec"]:.0f}')
                if is_main and not bar:
                    print(log_line(done, config.total_steps, record, task.items), file=sys.stderr, flush=True)
            elif task.evaluates(done, last):
                evaluation = task.evaluate(state, done, workdir_path, is_main)
                if writer:
                    writer.write(done, evaluation)

            preempted = preemption.reached(done)
            state_checkpoints.check(manager)
            force = preempted or last
            if force or manager.should_save(done):
                metrics_log.fetch()  # a non-finite loss stops the run before its state is written
                state_checkpoints.check_sane(state['params'], done, manager)  # and so do weights gone wild
                state_checkpoints.save(manager, done, state, train_iter, force=force)
            if preempted:
                state_checkpoints.finish(manager)
                logging.warning(
                    'stopped by %s: checkpoint at step %d saved; rerun the same command to resume',
                    preemption.received or 'preemption',
                    done,
                )
                break
        state_checkpoints.finish(manager)
    finally:
        progress.close()
        preemption.close()
        if writer:
            writer.close()

    done = int(copy_to_host(state['step']))
    seconds = time.perf_counter() - steady_start if steady_start else 0.0
    steps_run = done - start
    images_per_sec = (steps_run - 1) * config.batch_size / seconds if steps_run > 1 and seconds > 0 else 0.0
    records = report.read_metrics(workdir_path / 'metrics.jsonl') if is_main else {}
    summary = dict(
        step=done,
        steps_run=steps_run,
        # averages over this run's first and last logging windows: single steps are too noisy to compare
        first_loss=float(np.mean(metrics_log.first_window)) if metrics_log.first_window else None,
        last_loss=float(np.mean(metrics_log.last_window)) if metrics_log.last_window else None,
        window=config.log_every,
        images_per_sec=images_per_sec,
        stopped_by=preemption.received,  # 'SIGTERM' or 'SIGINT' when a signal stopped the run early
    )
    summary |= task.summarize(records, workdir_path, is_main)
    if is_main:
        nothing = f'nothing to do: {workdir_path} is already at step {summary["step"]}'
        print(task.summary_line(summary, workdir_path) if steps_run else nothing, flush=True)
    return summary


def losses_line(summary):
    """The start of every task's summary line: the steps, and the mean loss of the first and last log windows."""
    return (
        f'done: step {summary["step"]} ({summary["steps_run"]} this run), '
        f'mean loss of the first / last {summary["window"]} steps {summary["first_loss"]:.4f} -> {summary["last_loss"]:.4f}'
    )

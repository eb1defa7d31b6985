"""Checkpoints with orbax: the train state (params, opt_state, step, rng) and the grain iterator's position.

orbax writes each step into a temporary directory and renames it into place once complete, so a checkpoint
cut off halfway (SIGKILL, preemption, full disk) is never the one restored.
"""

import logging
import re
import shutil
import signal
import sys
import warnings

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mae_core.errors import UsageError
from mae_flax.files import as_path, is_remote


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (a full disk, a quota, a lost mount): the run stops at once, keeping the
    last good checkpoint, with one line that says what failed, where and how much space is left."""


def make_manager(directory, checkpoint_config):
    # every N steps and at a preemption (orbax's default would also save the first step)
    policy = ocp.checkpoint_managers.AnySavePolicy(
        [
            ocp.checkpoint_managers.FixedIntervalPolicy(checkpoint_config.every_steps),
            ocp.checkpoint_managers.PreemptionCheckpointingPolicy(),
        ]
    )
    options = ocp.CheckpointManagerOptions(save_decision_policy=policy, max_to_keep=checkpoint_config.keep, create=True)
    return ocp.CheckpointManager(
        directory,
        options=options,
        item_handlers={'state': ocp.StandardCheckpointHandler(), 'data': grain.checkpoint.CheckpointHandler()},
    )


SANE_WEIGHT = 1e4  # a weight this large is a diverging run's, never a trained MAE's (theirs stay within ~10)


@jax.jit
def _weights_summary(params):
    leaves = jax.tree.leaves(params)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))
    largest = jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in leaves]))
    return finite, largest


def check_sane(params, step, manager):
    """A kept checkpoint is a good one: FloatingPointError, before anything is written, if the weights are not
    finite or have grown past SANE_WEIGHT (a run diverging before its loss says so), naming the newest checkpoint,
    whose weights passed this check when it was saved. Two numbers are fetched from the device."""
    finite, largest = (float(value) for value in jax.device_get(_weights_summary(params)))
    if finite and largest < SANE_WEIGHT:
        return
    manager.wait_until_finished()
    good = manager.latest_step()
    kept = f'the newest good checkpoint (step {good}) is kept in' if good else 'no checkpoint yet in'
    what = 'not finite' if not finite else f'as large as {largest:.3g} (a sane run stays below {SANE_WEIGHT:g})'
    raise FloatingPointError(
        f'the weights at step {step} are {what}: the run diverged, and its checkpoint was not saved; {kept} '
        f'{manager.directory}: rerun with a lower learning rate to continue from it'
    )


def save(manager, step, state, data_iterator, *, force=False):
    """Saves when the interval says so (or `force`); returns whether it did. A failure to write this checkpoint, or
    the one before it (orbax writes in the background), raises CheckpointError and removes the partial files."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator))
    try:
        return manager.save(step, args=args, force=force)
    except Exception as error:  # noqa: BLE001  (orbax and tensorstore raise many kinds for one failed write)
        raise _write_failure(manager, step, error) from error


def check(manager):
    """Raises CheckpointError if a checkpoint being written in the background has failed (cheap: no waiting), so
    that a run stops at the first failed save, not at the next one."""
    try:
        manager.check_for_errors()
    except Exception as error:  # noqa: BLE001
        raise _write_failure(manager, None, error) from error


def finish(manager):
    """Waits for the checkpoint being written in the background; CheckpointError if it failed."""
    try:
        manager.wait_until_finished()
    except Exception as error:  # noqa: BLE001
        raise _write_failure(manager, None, error) from error


def _write_failure(manager, step, error):
    directory = as_path(manager.directory)
    partial = sorted(directory.glob('*.orbax-checkpoint-tmp*'))
    failed_steps = sorted({int(path.name.split('.')[0]) for path in partial if path.name.split('.')[0].isdigit()})
    for path in partial:  # never restored (not renamed into place); removed so nothing half-written is left
        if is_remote(path):
            path.rmtree(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
    step = failed_steps[0] if failed_steps else step
    good = [s for s in manager.all_steps() if (directory / str(s)).is_dir()]
    last_good = f'step {max(good)} in {directory}' if good else 'none yet'
    free = shutil.disk_usage(directory).free / 2**30 if not is_remote(directory) and directory.exists() else None
    text = ' '.join(str(error).split())
    # the operating system's reason is what a person needs ("No space left on device"), not tensorstore's path
    reason = re.findall(r': ([^:]*\[os_error_code=[^\]]*\])', text)
    reason = reason[-1] if reason else f'{type(error).__name__}: {text[:200]}'
    what = f'the checkpoint of step {step}' if step is not None else 'a checkpoint'
    return CheckpointError(
        f'could not write {what} ({reason}); the last good checkpoint is {last_good}'
        + (f'; {free:.1f} GiB free there' if free is not None else '')
    )


def restore(manager, abstract_state, data_iterator=None, step=None, *, set_aside=False):
    """The given step's state, or the newest checkpoint's that restores, laid out as `abstract_state`
    (jax.ShapeDtypeStruct with shardings); moves `data_iterator` to where that step left off. A damaged checkpoint
    (a truncated array, a missing file, a garbage iterator state) is skipped with one warning naming it and never
    deleted; with `set_aside` (a run that goes on past it) it is renamed STEP.damaged, out of the manager's way.
    Returns (state, step) of the one restored; UsageError if none restores."""
    steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
    items = dict(state=ocp.args.StandardRestore(abstract_state))
    if data_iterator is not None:
        items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    reasons = []
    for candidate in steps:
        try:
            restored = manager.restore(candidate, args=ocp.args.Composite(**items))
        except Exception as error:  # noqa: BLE001  (each kind of damage raises its own kind of error)
            reason = ' '.join(f'{type(error).__name__}: {error}'.split()).split(' See full TensorStore details')[0]
            reason = reason[:200]
            reasons.append(f'step {candidate}: {reason}')
            damaged = as_path(manager.directory) / str(candidate)
            moved = ''
            if set_aside and jax.process_index() == 0:
                damaged.rename(damaged.with_name(f'{candidate}.damaged'))
                moved = f'; kept as {damaged.name}.damaged'
            warnings.warn(f'skipping damaged checkpoint {damaged} ({reason}){moved}', stacklevel=2)
            continue
        if set_aside:
            manager.reload()  # the steps set aside are no longer the manager's
        logging.info('restored checkpoint at step %d from %s', candidate, manager.directory)
        return restored['state'], candidate
    raise UsageError(f'no checkpoint in {manager.directory} restores ({"; ".join(reasons) or "there are none"})')


class Preemption:
    """Notices SIGTERM (a TPU VM's preemption notice) and Ctrl-C (SIGINT) so the loop can checkpoint and stop at a
    step boundary. A second Ctrl-C stops at once (exit 130), without a checkpoint.

    One process: signal handlers. Several: JAX's preemption service (started by jax.distributed.initialize)
    catches SIGTERM, and orbax's `reached_preemption` makes every process agree on the step to stop at.
    """

    def __init__(self, manager, process_count):
        self.manager = manager
        self.single_process = process_count == 1
        self.received = None  # the signal's name, once one came
        self.previous = {}
        if self.single_process:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received == 'SIGINT' and signum == signal.SIGINT:
            print('\nmae-train: second Ctrl-C: stopping now, without a checkpoint', file=sys.stderr, flush=True)
            raise SystemExit(130)
        logging.warning('%s: saving a checkpoint at the end of this step, then stopping', name)
        self.received = name

    def reached(self, step):
        return self.received is not None if self.single_process else self.manager.reached_preemption(step)

    def close(self):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)


def restore_params(directory, abstract_params, step=None):
    """(params, step) of the given step's checkpoint, or the newest that restores: the parameters alone, read as a
    part of the saved state (no optimizer state is read or built), on the default device. UsageError if there is
    none, or none restores."""
    absl_logger = logging.getLogger('absl')
    level, absl_logger.level = absl_logger.level, logging.ERROR  # orbax's notes that a read-only manager won't save
    try:
        manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(create=False, read_only=True),
            item_handlers={'state': ocp.PyTreeCheckpointHandler()},
        )
    finally:
        absl_logger.setLevel(level)
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        raise UsageError(f'no checkpoint in {directory}: the run has not saved one yet')
    if step is not None and step not in steps:
        raise UsageError(f'{directory} has no checkpoint at step {step}: it has {sorted(steps)}')
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {'params': abstract_params}
    restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), abstract)
    args = ocp.args.Composite(state=ocp.args.PyTreeRestore(abstract, restore_args=restore_args, partial_restore=True))
    reasons = []
    for candidate in [step] if step is not None else steps:
        try:
            return manager.restore(candidate, args=args)['state']['params'], candidate
        except Exception as error:  # noqa: BLE001  (each kind of damage raises its own kind of error)
            reason = ' '.join(f'{type(error).__name__}: {error}'.split())[:200]
            reasons.append(f'step {candidate}: {reason}')
            warnings.warn(f'skipping damaged checkpoint {as_path(directory) / str(candidate)} ({reason})', stacklevel=2)
    raise UsageError(f'no checkpoint in {directory} restores ({"; ".join(reasons)})')

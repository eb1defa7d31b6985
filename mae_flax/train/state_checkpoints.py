"""Checkpoints with orbax: the train state (params, opt_state, step, rng) and the grain iterator's position.

orbax writes each step into a temporary directory and renames it into place once complete, so a checkpoint
cut off halfway (SIGKILL, preemption, full disk) is never the one restored.
"""

import logging
import signal

import grain
import orbax.checkpoint as ocp


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


def save(manager, step, state, data_iterator, *, force=False):
    """Saves when the interval says so (or `force`); returns whether it did."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator))
    return manager.save(step, args=args, force=force)


def restore(manager, abstract_state, data_iterator=None, step=None):
    """The latest (or given) step's state, laid out as `abstract_state` (jax.ShapeDtypeStruct with shardings);
    moves `data_iterator` to where that step left off."""
    step = manager.latest_step() if step is None else step
    items = dict(state=ocp.args.StandardRestore(abstract_state))
    if data_iterator is not None:
        items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    logging.info('restored checkpoint at step %d from %s', step, manager.directory)
    return restored['state']


class Preemption:
    """Notices SIGTERM (a TPU VM's preemption notice) so the loop can checkpoint and stop at a step boundary.

    One process: a signal handler. Several: JAX's preemption service (started by jax.distributed.initialize)
    catches the signal, and orbax's `reached_preemption` makes every process agree on the step to stop at.
    """

    def __init__(self, manager, process_count):
        self.manager = manager
        self.single_process = process_count == 1
        self.received = False
        if self.single_process:
            self.previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        logging.warning('SIGTERM: saving a checkpoint at the end of this step, then stopping')
        self.received = True

    def reached(self, step):
        return self.received if self.single_process else self.manager.reached_preemption(step)

    def close(self):
        if self.single_process:
            signal.signal(signal.SIGTERM, self.previous)

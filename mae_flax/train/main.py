"""`mae-train`: MAE pretraining from a config file.

    mae-train --workdir=/tmp/mae                                   # the tiny config on the embedded photos
    mae-train --config=mae_flax/configs/mae.py:vit_b16 --config.data.source=/data/imagenet/train \
        --config.mesh.fsdp=4 --workdir=gs://bucket/mae_b16 [--init_from=vit.pt]

Rerunning the same command resumes from the workdir's latest checkpoint. On TPU pods (and SLURM or other
clusters JAX detects) every host runs the same command; elsewhere pass --coordinator_address, --num_processes
and --process_id to each process.
"""

import logging
import sys
from pathlib import Path

import jax

try:
    from absl import app, flags
    from ml_collections import config_flags

    import mae_flax.configs
    from mae_flax.train import trainer
except ImportError as missing:  # a model-library install: say what to install, not where it failed
    raise SystemExit(f'mae-train needs the training extra: pip install "twin-mae[train]" ({missing})') from missing
from mae_core.errors import UsageError

DEFAULT_CONFIG = str(Path(mae_flax.configs.__file__).parent / 'mae.py') + ':tiny'

_CONFIG = config_flags.DEFINE_config_file('config', DEFAULT_CONFIG, 'A config file and variant: path/to/x.py:variant')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where checkpoints, metrics and images go; resumes from it', required=True
)
_INIT_FROM = flags.DEFINE_string('init_from', None, 'Start from torch weights: a .pt/.pth/.safetensors MAE or ViT')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, for multi-process runs')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'How many processes take part')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0 to num_processes - 1')


def initialize_distributed():
    """Explicit flags start a cluster of processes; otherwise JAX's auto-detection (TPU pods, SLURM, ...) is
    tried, and a lone machine runs as a single process."""
    explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if any(value is not None for value in explicit):
        if any(value is None for value in explicit):
            raise UsageError('--coordinator_address, --num_processes and --process_id go together: got only some')
        # CPU processes exchange collectives over gloo; harmless on TPU and GPU
        jax.config.update('jax_cpu_collectives_implementation', 'gloo')
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        return
    try:
        jax.distributed.initialize()
    except (ValueError, RuntimeError) as error:
        logging.info('single process: no cluster detected (%s)', error)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    # orbax and grain log every save and read through absl at INFO; keep their warnings, and this package's info
    logging.getLogger('absl').setLevel(logging.WARNING)
    try:
        initialize_distributed()
        trainer.train(_CONFIG.value, _WORKDIR.value, init_from=_INIT_FROM.value)
    except (UsageError, FloatingPointError) as error:  # a user's mistake, or a diverged run: one line; bugs keep
        raise SystemExit(f'mae-train: {" ".join(str(error).split())}') from error  # their traceback


def underscored(argv):
    """absl knows `--init_from`; people type `--init-from` too. Flag names get underscores, values stay as typed."""

    def spelled(arg):
        if not arg.startswith('--') or arg == '--':
            return arg
        name, equals, value = arg[2:].partition('=')
        return f'--{name.replace("-", "_")}{equals}{value}'

    return [spelled(arg) for arg in argv]


def run():
    app.run(main, argv=underscored(sys.argv))

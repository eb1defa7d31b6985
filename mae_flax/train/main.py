"""`mae-train`: MAE pretraining from a config file.

    mae-train --workdir=/tmp/mae                                   # the tiny config on the embedded photos
    mae-train --config=mae_flax/configs/mae.py:vit_b16 --config.data.source=/data/imagenet/train \
        --config.mesh.fsdp=4 --workdir=/mnt/shared/mae_b16 [--init_from=vit.pt]

Rerunning the same command resumes from the workdir's latest checkpoint. On TPU pods (and SLURM or other
clusters JAX detects) every host runs the same command; elsewhere pass --coordinator_address, --num_processes
and --process_id to each process.
"""

import dataclasses
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import jax

try:
    from absl import app, flags
    from ml_collections import config_flags

    import mae_flax.configs
    from mae_flax.configs import mae as mae_configs
    from mae_flax.train import pretrain, state_checkpoints
except ImportError as missing:  # a model-library install: say what to install, not where it failed
    raise SystemExit(f'mae-train needs the training extra: pip install "twin-mae[train]" ({missing})') from missing
from mae_core.errors import UsageError
from mae_flax.cli.common import USAGE_ERROR, WRITE_ERRNOS
from mae_flax.quiet import OrbaxEchoes

DEFAULT_CONFIG = str(Path(mae_flax.configs.__file__).parent / 'mae.py') + ':photos'

FLAGS = {}  # name -> absl flag holder, once define_flags() ran


@dataclasses.dataclass(frozen=True)
class Command:
    """What differs between mae-train and the classification commands that share this driver."""

    name: str
    doc: str
    default_config: str
    variants: tuple
    train: Callable  # (config, workdir, init_from, wait) -> summary
    init_from_help: str
    examples: tuple


COMMAND = Command(
    'mae-train',
    __doc__,
    DEFAULT_CONFIG,
    mae_configs.VARIANTS,
    lambda config, workdir, init_from, wait: pretrain.train(config, workdir, init_from=init_from, wait=wait),
    'Start from torch weights: a .pt/.pth/.safetensors file or a HuggingFace folder',
    (
        'mae-train --workdir=runs/b16 --config=mae_flax/configs/mae.py:vit_b16 --config.batch_size=1024',
        'mae-train --workdir=runs/tiny --config.total_steps=2000 --config.model.mae.norm_pix_loss=True',
    ),
)
ACTIVE = [COMMAND]  # the command being run


def define_flags():
    """The command's flags. Defined when the command runs, not on import: ml_collections reads the --config.x
    overrides from sys.argv while defining --config, so sys.argv must hold their final spelling by then."""
    if FLAGS:
        return FLAGS
    command = ACTIVE[0]
    FLAGS['config'] = config_flags.DEFINE_config_file(
        'config', command.default_config, 'A config file and variant: path/to/x.py:variant'
    )
    FLAGS['workdir'] = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and images go; resumes from it')
    FLAGS['init_from'] = flags.DEFINE_string('init_from', None, command.init_from_help)
    FLAGS['wait'] = flags.DEFINE_boolean(
        'wait', False, 'If another run is writing in --workdir, wait for it to end instead of stopping'
    )
    FLAGS['coordinator_address'] = flags.DEFINE_string(
        'coordinator_address', None, 'host:port of process 0, for multi-process runs'
    )
    FLAGS['num_processes'] = flags.DEFINE_integer('num_processes', None, 'How many processes take part')
    FLAGS['process_id'] = flags.DEFINE_integer('process_id', None, 'This process, 0 to num_processes - 1')
    return FLAGS


def initialize_distributed():
    """Explicit flags start a cluster of processes; otherwise JAX's auto-detection (TPU pods, SLURM, ...) is
    tried, and a lone machine runs as a single process."""
    explicit = tuple(FLAGS[name].value for name in ('coordinator_address', 'num_processes', 'process_id'))
    if any(value is not None for value in explicit):
        if any(value is None for value in explicit):
            raise UsageError('--coordinator_address, --num_processes and --process_id go together: got only some')
        # CPU processes exchange collectives over gloo; harmless on TPU and GPU
        jax.config.update('jax_cpu_collectives_implementation', 'gloo')
        jax.distributed.initialize(*explicit)
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
    # JAX's probing for a TPU on other machines ("Failed to open libtpu.so") is no news; its warnings still show
    logging.getLogger('jax').setLevel(logging.WARNING)
    name = ACTIVE[0].name
    # a warning (a damaged checkpoint skipped, an unreadable image) is one line, not two with a source line
    warnings.showwarning = lambda message, *args, **kwargs: print(f'{name}: warning: {message}', file=sys.stderr)
    OrbaxEchoes.install()
    try:
        if FLAGS['workdir'].value is None:
            raise UsageError(f'--workdir is required: where checkpoints, metrics and images go ({name} --help)')
        initialize_distributed()
        summary = ACTIVE[0].train(
            FLAGS['config'].value, FLAGS['workdir'].value, FLAGS['init_from'].value, FLAGS['wait'].value
        )
    except UsageError as error:  # a user's mistake: one line, exit 2; an error that is not the user's: a traceback
        print(f'{name}: error: {" ".join(str(error).split())}', file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except OSError as error:  # the machine's refusal: a read-only folder, a full disk, a file gone
        if error.errno not in WRITE_ERRNOS:
            raise
        print(f'{name}: error: cannot write {error.filename}: {error.strerror}', file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except (FloatingPointError, state_checkpoints.CheckpointError) as error:  # one line, the last good checkpoint kept
        raise SystemExit(f'{name}: {error}') from error
    if summary['stopped_by'] == 'SIGINT':
        print(
            f'{name}: stopped by Ctrl-C at step {summary["step"]}, checkpoint saved; rerun to resume',
            file=sys.stderr,
        )
        sys.exit(130)


def underscored(argv):
    """absl knows `--init_from`; people type `--init-from` too. Flag names get underscores, values stay as typed."""

    def spelled(arg):
        if not arg.startswith('--') or arg == '--':
            return arg
        name, equals, value = arg[2:].partition('=')
        return f'--{name.replace("-", "_")}{equals}{value}'

    return [spelled(arg) for arg in argv]


def help_text():
    command = ACTIVE[0]
    lines = [f'usage: {command.name} --workdir=DIR [--config=FILE:VARIANT] [--config.FIELD=VALUE ...] [flags]', '']
    lines += [command.doc.strip().splitlines()[0], '', 'flags (dashes or underscores):']
    lines += [f'  --{name:<22}{holder.help}' for name, holder in ((n, flags.FLAGS[n]) for n in FLAGS)]
    config_file, default_variant = command.default_config.rsplit(':', 1)
    lines += [
        '',
        f'config variants (--config={config_file}:VARIANT, default {default_variant}):',
        '  ' + ', '.join(command.variants),
        '',
        'any config field can be overridden, for example:',
        *(f'  {example}' for example in command.examples),
        '',
        'exit codes: 0 done (or preempted and checkpointed); 2 a mistake in the flags, config, data or workdir, or',
        'a folder it cannot write (one line); 1 a diverged run or a checkpoint that could not be written (one line,',
        'the last good checkpoint named); 130 stopped by Ctrl-C after a checkpoint.',
    ]
    return '\n'.join(lines)


def parse_flags(argv):
    """absl's flag parsing, with a --help that lists this command's own flags, and a mistake in a flag or a
    --config override reported as one line (absl and ml_collections raise long chained tracebacks)."""
    if any(arg in ('--help', '-h', '--helpshort', '-?') for arg in argv[1:]):
        print(help_text())
        sys.exit(0)
    try:
        return flags.FLAGS(argv)
    except Exception as error:  # noqa: BLE001  (a bad value for any flag: absl's errors, ml_collections' KeyError...)
        print(f'{ACTIVE[0].name}: error: {flag_error(error, argv)}', file=sys.stderr)
        sys.exit(USAGE_ERROR)


def flag_error(error, argv):
    """One line for a parse error, naming the --config override it came from when there is one."""
    lines = [line.strip() for line in str(error).replace('\\n', '\n').splitlines() if line.strip()]
    if isinstance(error, AttributeError | KeyError) and lines:  # ml_collections: "'field'" [+ a suggestion]
        field = lines[0].strip('"\'\\')
        for arg in argv[1:]:
            name = arg.split('=', 1)[0].removeprefix('--')
            if name.startswith('config.') and name.endswith(f'.{field}'):
                suggestion = ' '.join(lines[1:]).strip('"\'')
                return f'--{name}: the config has no field {field!r}' + (f'. {suggestion}' if suggestion else '')
    return (lines[-1] if lines else type(error).__name__).strip('"\'')


def run(command=COMMAND):
    ACTIVE[0] = command
    sys.argv[:] = underscored(sys.argv)
    try:
        define_flags()
    except Exception as error:  # noqa: BLE001  (a --config override naming no field, or a config file that fails)
        print(f'{command.name}: error: {flag_error(error, sys.argv)}', file=sys.stderr)
        sys.exit(USAGE_ERROR)
    app.run(main, argv=sys.argv, flags_parser=parse_flags)

"""A run's workdir: where it is (local or a bucket), its config.json, the layout its checkpoints were written in, and
its model restored for the commands (mae-convert, mae-reconstruct, mae-parity, --init_from), without the training
loop and without building an optimizer.

    WORKDIR/config.json      the run's config, model description included (config.model)
    WORKDIR/fixed_tables.safetensors   the model's fixed tables where they are not the computed ones (a
                             transformers checkpoint's zeros, kept from --init_from; mae_flax.fixed_tables)
    WORKDIR/checkpoints/N/   orbax: the state (step, params, opt_state, rng) and the data iterator's position
    WORKDIR/metrics.jsonl, tensorboard/, images/, loss_curve.png (pretraining), best.safetensors (classification)
"""

import json

import ml_collections
import numpy as np
import safetensors.numpy
from flax import nnx

from mae_core.errors import UsageError
from mae_flax.files import as_path, atomic_path, is_remote
from mae_flax.files.models import LoadedModel
from mae_flax.train import model_state, state_checkpoints

CONFIG = 'config.json'
CHECKPOINTS = 'checkpoints'
TABLES = 'fixed_tables.safetensors'


def workdir_path(workdir):
    """mae-train's workdir: an absolute local path, or an etils.epath.Path for a URL (gs://bucket/run: checkpoints
    by orbax and tensorstore, metrics, images and the config through epath, which needs gcsfs for gs://)."""
    path = as_path(workdir)
    if is_remote(path):
        try:
            path.exists()
        except ImportError as error:  # fsspec: "Please install gcsfs to access Google Storage"
            extra = " (the [gcs] extra: pip install 'twin-mae[gcs]')" if str(path).startswith('gs://') else ''
            raise UsageError(f'--workdir {workdir}: {error}{extra}') from error
    elif path.exists() and not path.is_dir():
        raise UsageError(f'--workdir {workdir} is a file, not a folder')
    return path


def local_workdir(workdir):
    """The workdir as an absolute local path, for the commands not tested with remote workdirs (mae-finetune,
    mae-linprobe): a URL is refused (Path would turn gs://bucket/x into ./gs:/bucket/x, silently)."""
    if is_remote(workdir):
        raise UsageError(
            f'--workdir {workdir}: only mae-train writes to remote paths; use a path every host sees (NFS, Filestore, '
            'a gcsfuse mount)'
        )
    return workdir_path(workdir)


def has_checkpoints(workdir):
    """Whether the run in `workdir` has saved a checkpoint (a numbered step folder)."""
    folder = workdir / CHECKPOINTS
    return (workdir / CONFIG).is_file() and folder.is_dir() and any(path.name.isdigit() for path in folder.iterdir())


def load_config(workdir):
    """The ConfigDict a run in `workdir` was started with (its config.json); one line if it is missing or not
    JSON."""
    path = workdir_path(workdir) / CONFIG
    if not path.is_file():
        raise UsageError(f'{workdir} has no {CONFIG}: expected the --workdir of a mae-train run')
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f'{path} is not valid JSON ({error}): a hand-edited or damaged file?') from error
    if not isinstance(values, dict):
        raise UsageError(f'{path} holds a {type(values).__name__}, expected the mapping a run writes')

    def tuples(value):
        if isinstance(value, dict):
            return {key: tuples(item) for key, item in value.items()}
        return tuple(value) if isinstance(value, list) else value

    return ml_collections.ConfigDict(tuples(values))


def write_config(workdir, config):
    with atomic_path(workdir / CONFIG) as tmp:
        tmp.write_text(config.to_json_best_effort(indent=2))


def read_tables(workdir):
    """{path: array} of the run's own fixed tables, {} if it computes them all."""
    path = workdir_path(workdir) / TABLES
    if not path.is_file():
        return {}
    try:
        return safetensors.numpy.load(path.read_bytes())
    except Exception as error:  # safetensors raises its own types for a damaged file
        raise UsageError(f'{path} is not a readable safetensors file ({type(error).__name__}: {error})') from error


def write_tables(workdir, tables):
    with atomic_path(workdir / TABLES) as tmp:
        safetensors.numpy.save_file({key: np.ascontiguousarray(value) for key, value in tables.items()}, tmp)


def check_layout(config, workdir):
    """A run resumes with the parameter layout it was started with: scanned blocks stack their parameters, so a
    checkpoint of one layout does not restore into the other (runs from before `scan_layers` were unscanned)."""
    if not has_checkpoints(workdir):
        return
    started = load_config(workdir).get('scan_layers', False)
    if started != config.scan_layers:
        raise UsageError(
            f'{workdir} was trained with scan_layers={started}: resume it with --config.scan_layers={started} '
            '(the layout of its checkpoints), or start a new --workdir'
        )


def restore_model(workdir, step=None):
    """(mae_flax model with a checkpoint's parameters on the default device, its step, the run's config): the
    parameters alone are read, with no optimizer built."""
    config = load_config(workdir)
    params, step = state_checkpoints.restore_params(
        workdir_path(workdir) / CHECKPOINTS, model_state.abstract_params(config), step
    )
    graphdef, rest = model_state.model_parts(config, tables=read_tables(workdir))
    return nnx.merge(graphdef, params, rest), step, config


def read_workdir(workdir, step=None):
    """A LoadedModel of a mae-train workdir's checkpoint (the latest, or `step`)."""
    model, step, config = restore_model(workdir, step)
    spec = model_state.model_spec(config)
    fields = [*spec.encoder, *(spec.mae or {}), 'pixel_mean', 'pixel_std']
    return LoadedModel(workdir, 'workdir', spec, dict.fromkeys(fields, f'from {CONFIG}'), model, step=step)

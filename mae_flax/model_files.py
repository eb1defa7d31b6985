"""Any model a user names, read into a mae_flax model and its ModelSpec: the one entry point of the commands.

A Hub id (`org/name[@revision]`, from the Hugging Face cache or downloaded) is its snapshot folder; a checkpoint
file or a HuggingFace folder is read by mae_flax.files.models; a mae-train workdir (local or gs://) by
mae_flax.train.workdir, which needs the [train] extra (orbax) but not the training loop. Writing is
mae_flax.files.models's `write_model`.
"""

from pathlib import Path

from mae_core.errors import UsageError
from mae_flax.files import hf_folders, hub, is_remote
from mae_flax.files.models import LoadedModel, flax_params, read_model_file, spec_path, torch_model, write_model
from mae_flax.files.weights import SUFFIXES, one_line

__all__ = [
    'SUFFIXES',
    'LoadedModel',
    'flax_params',
    'one_line',
    'read_model',
    'spec_path',
    'torch_model',
    'write_model',
]


def read_model(path, flags=None, *, step=None):
    """A LoadedModel from a torch-layout or Flax file, a HuggingFace folder or Hub id, or a mae-train workdir; `flags` is
    {field: value} from the command line, for what neither a JSON beside the file nor the tensor shapes say."""
    if not is_remote(path):
        path = hub.locate(path)  # a Hub id (org/name[@revision]) -> its snapshot folder
    if not is_remote(path) and not (Path(path).is_dir() and hf_folders.hf_config(path) is None):
        if step is not None:
            raise UsageError(f'--step applies to mae-train workdirs; {path} is a file')
        return read_model_file(path, flags)
    if not is_remote(path) and not (Path(path) / 'config.json').is_file():
        raise UsageError(f'{path} is a folder without config.json: expected a checkpoint file or a mae-train workdir')
    if flags:
        raise UsageError(
            f'{path} is a mae-train workdir, whose config.json says everything: drop --{next(iter(flags))}'
        )
    try:
        from mae_flax.train import workdir
    except ImportError as error:
        raise UsageError(
            f'reading a mae-train workdir needs the training extra: pip install "twin-mae[train]" ({error})'
        ) from error
    return workdir.read_workdir(path, step)

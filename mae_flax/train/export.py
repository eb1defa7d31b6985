"""`mae-export`: a mae-train checkpoint as a vit-pytorch-compatible torch state dict.

    mae-export --workdir=/tmp/mae --out=mae.pt                 # the whole MAE (vit-pytorch / mae_torch keys)
    mae-export --workdir=/tmp/mae --out=vit.safetensors --encoder_only

The file loads with `mae_torch.MAE(encoder=mae_torch.ViT(**config.model), **config.mae).load_state_dict(...)`
(or vit-pytorch's MAE and ViT), with the sizes from the run's workdir/config.json.
"""

import functools
from pathlib import Path

import jax
from absl import app, flags
from flax import nnx

from mae_flax.convert import save_state_dict_file, to_torch_state_dict
from mae_flax.train import checkpoint, optim, trainer


def load_checkpoint(workdir, step=None):
    """(mae_flax.MAE with the checkpoint's parameters on the default device, its step, the run's config)."""
    config = trainer.load_config(workdir)
    tx, _ = optim.make_optimizer(config.optim, config.batch_size, config.total_steps)
    abstract_state = jax.eval_shape(functools.partial(trainer.init_state, config, tx))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract_state = trainer.with_shardings(abstract_state, jax.tree.map(lambda _: device, abstract_state))
    manager = checkpoint.make_manager(Path(workdir).absolute() / 'checkpoints', config.checkpoint)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise ValueError(f'no checkpoint in {workdir}/checkpoints: expected the --workdir of a mae-train run')
    state = checkpoint.restore(manager, abstract_state, step=step)
    graphdef, rest = trainer.model_parts(config)
    return nnx.merge(graphdef, state['params'], rest), step, config


def export(workdir, out, *, step=None, encoder_only=False):
    """Writes the checkpoint's MAE (or its encoder ViT) as a torch state dict (.pt/.pth/.safetensors); atomic."""
    model, step, _ = load_checkpoint(workdir, step)
    state_dict = to_torch_state_dict(model.encoder if encoder_only else model)
    return save_state_dict_file(state_dict, out), step


_WORKDIR = flags.DEFINE_string('workdir', None, 'A mae-train workdir', required=True)
_OUT = flags.DEFINE_string('out', None, 'The file to write: .pt, .pth or .safetensors', required=True)
_STEP = flags.DEFINE_integer('step', None, 'Which checkpoint (default: the latest)')
_ENCODER_ONLY = flags.DEFINE_bool('encoder_only', False, 'Write only the encoder, as a vit-pytorch ViT')


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    try:
        path, step = export(_WORKDIR.value, _OUT.value, step=_STEP.value, encoder_only=_ENCODER_ONLY.value)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise SystemExit(f'mae-export: {error}') from error
    print(f'wrote step {step} of {_WORKDIR.value} to {path}')


def run():
    app.run(main)


if __name__ == '__main__':
    run()

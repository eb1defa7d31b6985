"""Small checkpoints for the command-line tests, made once per session, and a way to run the commands."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mae_torch
from mae_flax.cli import convert
from mae_flax.convert import save_state_dict_file
from parity_tests.oracles import vit_pytorch
from parity_tests.pairs import small_spec, torch_mae

REPO = Path(__file__).resolve().parents[2]

# two heads: the weights cannot tell heads from dim_head, so converting it needs --heads and --decoder_heads
TINY = small_spec(dim=32, depth=1, heads=2, dim_head=16, mlp_dim=64, decoder_dim=24, decoder_depth=1, decoder_heads=2)
TINY_FLAGS = ('--heads', '2', '--decoder_heads', '2')


def run_command(name, *args):
    """Runs `python -m mae_flax.cli.<name> args` from the repository root, as a user would."""
    command = [sys.executable, '-m', f'mae_flax.cli.{name}', *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def assert_one_line_error(result, prog):
    """A user mistake: exit 2 and exactly one `prog: error: ...` line on stderr, no traceback."""
    errors = [line for line in result.stderr.splitlines() if 'warning' not in line]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and errors[0].startswith(f'{prog}: error: '), result.stderr
    assert 'Traceback' not in result.stderr


@pytest.fixture(scope='session')
def tiny_model():
    return torch_mae(TINY, seed=0)


@pytest.fixture(scope='session')
def wrapped_checkpoint(tiny_model, tmp_path_factory):
    """A training script's file: {'model': DDP state dict, 'epoch': ...}."""
    path = tmp_path_factory.mktemp('wrapped') / 'mae.pt'
    state_dict = {f'module.{key}': value for key, value in tiny_model.state_dict().items()}
    torch.save({'model': state_dict, 'epoch': 3}, path)
    return path


@pytest.fixture(scope='session')
def flax_checkpoint(wrapped_checkpoint, tmp_path_factory):
    """The tiny model as a Flax checkpoint (converted in-process: its conversion is tested in test_convert)."""
    path = tmp_path_factory.mktemp('flax') / 'mae.safetensors'
    assert convert.main([str(wrapped_checkpoint), str(path), *TINY_FLAGS]) == 0
    return path


@pytest.fixture(scope='session')
def vit_pytorch_checkpoint(tmp_path_factory):
    """An MAE saved by vit-pytorch itself (pool='mean': vit-pytorch's MAE crashes with pool='cls')."""
    package = vit_pytorch()
    torch.manual_seed(0)
    encoder = package.vit.ViT(
        image_size=32, patch_size=8, num_classes=10, dim=32, depth=1, heads=2, dim_head=16, mlp_dim=64, pool='mean'
    )
    model = package.mae.MAE(encoder=encoder, decoder_dim=32, decoder_depth=1, decoder_heads=4, decoder_dim_head=8)
    path = tmp_path_factory.mktemp('vit_pytorch') / 'vit_pytorch_mae.pth'
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope='session')
def vit_checkpoint(tmp_path_factory):
    """A ViT classifier without a decoder, one head of dim_head == dim (so no flags are needed), as safetensors."""
    torch.manual_seed(0)
    model = mae_torch.ViT(
        image_size=32, patch_size=8, num_classes=10, dim=32, depth=1, heads=1, dim_head=32, mlp_dim=64
    )
    path = tmp_path_factory.mktemp('vit') / 'vit.safetensors'
    save_state_dict_file(model.state_dict(), path)
    return path


@pytest.fixture(scope='session')
def image_dir(tmp_path_factory):
    """Two RGB images: one of the model size, one not (it gets resized)."""
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for name, (height, width) in (('a.png', (32, 32)), ('b.png', (48, 40))):
        # smooth gradients plus noise: a picture, not flat, so that masked patches show
        y, x = np.mgrid[:height, :width]
        picture = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 3)], -1) * 200 + 40 * rng.random(
            (height, width, 3)
        )
        Image.fromarray(picture.clip(0, 255).astype(np.uint8)).save(folder / name)
    return folder

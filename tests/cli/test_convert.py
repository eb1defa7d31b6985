"""mae-convert: torch layout <-> Flax checkpoints, hyperparameters inferred or asked for, bad input refused."""

import json
import pickle
import re

import numpy as np
import pytest
import safetensors
import safetensors.numpy
import torch

from mae_core.errors import UsageError
from mae_flax.cli import convert
from parity_tests.pairs import torch_mae
from tests.cli.conftest import TINY, TINY_FLAGS, assert_one_line_error, run_command


def test_torch_to_flax_to_torch_is_bit_exact(wrapped_checkpoint, tiny_model, tmp_path):
    flax_path, torch_path = tmp_path / 'mae.safetensors', tmp_path / 'back.pt'

    to_flax = run_command('convert', wrapped_checkpoint, flax_path, *TINY_FLAGS)
    assert to_flax.returncode == 0, to_flax.stderr
    num_parameters = sum(param.numel() for param in tiny_model.parameters())
    assert f'MAE, {num_parameters:,} parameters' in to_flax.stdout
    assert re.search(r'^ +heads +2 +given$', to_flax.stdout, re.M)
    assert re.search(r'^ +dim_head +16 +inferred$', to_flax.stdout, re.M)
    assert re.search(r'^ +masking_ratio +0.75 +assumed$', to_flax.stdout, re.M)
    assert re.search(r'^ +pixel_mean +\(0.0, 0.0, 0.0\) +assumed$', to_flax.stdout, re.M)

    # back needs no flags: the config JSON written beside the Flax file holds them
    to_torch = run_command('convert', flax_path, torch_path)
    assert to_torch.returncode == 0, to_torch.stderr
    assert 'from mae.safetensors.json' in to_torch.stdout

    expected, actual = tiny_model.state_dict(), torch.load(torch_path, weights_only=True)
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key
    assert json.loads((tmp_path / 'back.pt.json').read_text()) == json.loads(
        (tmp_path / 'mae.safetensors.json').read_text()
    )


def test_flax_checkpoint_is_keyed_by_flax_parameter_paths(flax_checkpoint, tiny_model):
    with safetensors.safe_open(flax_checkpoint, framework='np') as file:
        assert file.metadata() == {'format': 'mae_flax'}
    arrays = safetensors.numpy.load_file(flax_checkpoint)
    torch_weight = tiny_model.state_dict()['encoder.transformer.layers.0.0.to_qkv.weight'].numpy()
    np.testing.assert_array_equal(arrays['encoder.transformer.layers.0.0.to_qkv.kernel'], torch_weight.T)
    config = json.loads(flax_checkpoint.with_name('mae.safetensors.json').read_text())
    assert config == {
        'family': 'vit_pytorch',
        'encoder': {
            'image_size': 32, 'patch_size': 8, 'num_classes': 0, 'dim': 32, 'depth': 1, 'heads': 2, 'mlp_dim': 64,
            'pool': 'cls', 'channels': 3, 'dim_head': 16, 'layer_norm_eps': 1e-5,
        },
        'mae': {
            'decoder_dim': 24, 'masking_ratio': 0.75, 'decoder_depth': 1, 'decoder_heads': 2, 'decoder_dim_head': 16,
            'norm_pix_loss': False,
        },
        'pixel_mean': [0.0, 0.0, 0.0],
        'pixel_std': [1.0, 1.0, 1.0],
    }  # fmt: skip


def test_vit_pytorch_checkpoint_converts(vit_pytorch_checkpoint, tmp_path):
    out = tmp_path / 'mae.safetensors'
    assert convert.main([str(vit_pytorch_checkpoint), str(out), '--heads', '2', '--decoder_dim_head', '8']) == 0
    config = json.loads((tmp_path / 'mae.safetensors.json').read_text())
    assert (config['encoder']['pool'], config['encoder']['num_classes'], config['mae']['decoder_heads']) == (
        'mean',
        10,
        4,
    )
    torch_weight = torch.load(vit_pytorch_checkpoint, weights_only=True)['to_pixels.weight'].numpy()
    np.testing.assert_array_equal(safetensors.numpy.load_file(out)['to_pixels.kernel'], torch_weight.T)


def test_vit_only_checkpoint_converts_without_flags(vit_checkpoint, tmp_path):
    assert convert.main([str(vit_checkpoint), str(tmp_path / 'vit_flax.safetensors')]) == 0
    config = json.loads((tmp_path / 'vit_flax.safetensors.json').read_text())
    assert config['mae'] is None
    assert (config['encoder']['heads'], config['encoder']['dim_head'], config['encoder']['num_classes']) == (1, 32, 10)
    assert 'mlp_head.kernel' in safetensors.numpy.load_file(tmp_path / 'vit_flax.safetensors')


def test_ambiguous_heads_ask_for_the_flag_and_write_nothing(wrapped_checkpoint, tmp_path):
    result = run_command('convert', wrapped_checkpoint, tmp_path / 'mae.safetensors')
    assert_one_line_error(result, 'mae-convert')
    assert '--heads or --dim_head' in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path):
    (tmp_path / 'notes.pt').write_text('not a checkpoint')
    result = run_command('convert', tmp_path / 'notes.pt', tmp_path / 'out.safetensors')
    assert_one_line_error(result, 'mae-convert')
    assert 'notes.pt is not a readable .pt checkpoint' in result.stderr
    assert not (tmp_path / 'out.safetensors').exists()


def _resnet_checkpoint(path):
    torch.save({'conv1.weight': torch.zeros(8, 3, 7, 7), 'fc.weight': torch.zeros(10, 8)}, path)


def _pickled_module(path):
    torch.save(torch.nn.Linear(2, 2), path)


def _no_tensors(path):
    torch.save({'epoch': 3, 'optimizer': {'lr': 0.1}}, path)


class _Payload:
    def __reduce__(self):
        return (print, ('this ran',))


def _malicious_pickle(path):
    path.write_bytes(pickle.dumps(_Payload()))


def _empty_file(path):
    path.write_bytes(b'')


def _nan_weights(path):
    state = torch_mae(TINY, seed=0).state_dict()
    torch.save({key: torch.full_like(value, float('nan')) for key, value in state.items()}, path)


@pytest.mark.parametrize(
    ('make_input', 'flags', 'message'),
    [
        (_resnet_checkpoint, (), 'not a state dict of any known model family'),
        (_pickled_module, (), 'save model.state_dict() instead'),
        (_no_tensors, (), 'no tensors'),
        (_malicious_pickle, (), 'holds Python objects other than tensors, which were refused for safety'),
        (_empty_file, (), 'is an empty file (0 bytes)'),
        (_nan_weights, ('--heads', '2'), "'mask_token' holds NaN or Inf (24 of 24 values)"),
        (None, ('--image_size', '64'), 'check --image_size'),
        (None, ('--channels', '1'), 'pass --patch_size'),
        (None, ('--heads', '3'), '--heads 3 does not divide'),
        (None, ('--dim', '8'), 'unrecognized arguments'),
    ],
    ids=[
        'other_architecture',
        'pickled_module',
        'no_tensors',
        'malicious_pickle',
        'empty_file',
        'nan_weights',
        'wrong_image_size',
        'wrong_channels',
        'bad_heads',
        'unknown_flag',
    ],
)
def test_bad_input_is_one_line_and_exit_2(make_input, flags, message, wrapped_checkpoint, tmp_path, capsys):
    source = wrapped_checkpoint
    if make_input is not None:
        source = tmp_path / 'input.pt'
        make_input(source)
    out = tmp_path / 'out.safetensors'
    with pytest.raises(SystemExit) as exit_info:
        convert.run([str(source), str(out), '--decoder_heads', '2', *flags])
    captured = capsys.readouterr()
    stderr = captured.err
    assert exit_info.value.code == 2 and 'this ran' not in captured.out  # no pickled payload ever runs
    # one error line, last; argparse's own errors print the usage above it
    assert stderr.splitlines()[-1].startswith('mae-convert: error: ') and stderr.count('error:') == 1, stderr
    assert message in stderr and 'Traceback' not in stderr
    assert not out.exists() and not (tmp_path / 'out.safetensors.json').exists()


def test_flags_take_dashes_as_well_as_underscores(wrapped_checkpoint, tmp_path, capsys):
    assert (
        convert.main(
            [str(wrapped_checkpoint), str(tmp_path / 'mae.safetensors'), '--heads', '2', '--decoder-heads', '2']
        )
        == 0
    )
    assert re.search(r'^ +decoder_heads +2 +given$', capsys.readouterr().out, re.M)
    with pytest.raises(SystemExit):
        convert.main(['--help'])
    help_text = capsys.readouterr().out
    assert '--decoder_heads' in help_text and '--decoder-heads' not in help_text  # one spelling shown


def test_a_workdir_converts_with_its_own_description_and_refuses_flags(tmp_path, capsys):
    workdir = tmp_path / 'not_a_run'
    workdir.mkdir()
    with pytest.raises(UsageError, match='is a folder without config.json'):
        convert.main([str(workdir), str(tmp_path / 'mae.pt')])

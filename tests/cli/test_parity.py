"""mae-parity: the torch checkpoint and its Flax conversion agree stage by stage; exit codes CI can use."""

import json

import jax
import pytest

from mae_flax.cli import parity
from tests.cli.conftest import TINY_FLAGS, run_command

STAGES = ['masking', 'patch_embedding', 'encoded_tokens', 'decoder_input', 'decoded_tokens', 'predictions', 'loss']


def test_vit_pytorch_checkpoint_passes_with_gradients_as_json(vit_pytorch_checkpoint):
    flags = ('--heads', '2', '--decoder_heads', '4')
    result = run_command('parity', vit_pytorch_checkpoint, *flags, '--grads', '--json', '--batch', '2')
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report['passed'] is True and report['batch'] == 2
    assert [stage['name'] for stage in report['stages']] == STAGES
    assert all(stage['passed'] for stage in report['stages'] + report['gradients'])
    gradients = {row['name']: row for row in report['gradients']}
    # every trained weight, named as torch names it, and the input images
    assert {'input', 'mask_token', 'encoder.transformer.layers.0.0.to_qkv.weight', 'to_pixels.bias'} <= set(gradients)
    assert gradients['encoder.transformer.layers.0.0.to_qkv.weight']['max_abs_diff'] > 0  # really compared


def test_folder_images_are_resized_and_the_table_passes(wrapped_checkpoint, image_dir):
    result = run_command('parity', wrapped_checkpoint, *TINY_FLAGS, '--images', image_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'resized' in result.stderr and 'b.png' in result.stderr  # 48x40 -> 32x32
    assert 'fewer than --batch 4' in result.stderr  # two images in the folder
    for stage in STAGES:
        assert any(line.startswith(stage) and line.endswith('pass') for line in result.stdout.splitlines()), stage
    assert result.stdout.rstrip().endswith('all pass')


def test_flax_checkpoint_passes_and_zero_tolerance_fails_with_exit_1(flax_checkpoint, capsys):
    assert parity.main([str(flax_checkpoint)]) == 0
    assert capsys.readouterr().out.rstrip().endswith('all pass')
    # float32 summation orders differ between the backends, so some stage is off by a rounding error
    assert parity.main([str(flax_checkpoint), '--rtol', '0', '--atol', '0']) == 1
    out = capsys.readouterr().out
    assert 'FAIL' in out and out.rstrip().endswith('FAIL')


@pytest.mark.parametrize(
    ('args', 'message'),
    [
        (['--batch', '0'], '--batch must be at least 1'),
        (['--images', 'no/such/folder'], 'no such image folder'),
        (['--device', 'tpu'], 'JAX has no tpu here'),
    ],
)
def test_bad_arguments_are_one_line(flax_checkpoint, args, message, capsys):
    if 'tpu' in args and jax.default_backend() == 'tpu':
        pytest.skip('this host has a TPU')
    with pytest.raises(SystemExit) as exit_info:
        parity.run([str(flax_checkpoint), *args])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert stderr.startswith('mae-parity: error: ') and message in stderr and stderr.count('\n') == 1


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / 'weights.safetensors').write_bytes(b'\x00' * 64)
    with pytest.raises(SystemExit) as exit_info:
        parity.run([str(tmp_path / 'weights.safetensors')])
    assert exit_info.value.code == 2
    assert 'not a readable .safetensors checkpoint' in capsys.readouterr().err


def test_vit_only_checkpoint_is_refused(vit_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parity.run([str(vit_checkpoint)])
    assert exit_info.value.code == 2
    assert 'compares MAE checkpoints' in capsys.readouterr().err

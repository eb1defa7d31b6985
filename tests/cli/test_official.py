"""The commands on the official family's files as users hold them: facebookresearch/mae's .pth (under 'model'),
its encoder-only pretraining weights, and HuggingFace folders."""

import re
import warnings

import numpy as np
import pytest
import torch

from mae_core.errors import UsageError
from mae_flax.cli import convert, reconstruct
from mae_flax.model_files import read_model
from parity_tests.pairs import official_spec, torch_mae
from tests.cli.conftest import assert_one_line_error, run_command

SPEC = official_spec(img_size=32, patch_size=8, embed_dim=48, num_heads=3, decoder_num_heads=2)
HEADS = ('--num-heads', '3', '--decoder-num-heads', '2')  # as people type them


@pytest.fixture(scope='module')
def fb_checkpoint(tmp_path_factory):
    """What facebookresearch/mae's main_pretrain.py saves: {'model': state_dict, 'optimizer': ..., 'epoch': ...}."""
    path = tmp_path_factory.mktemp('fb') / 'checkpoint-799.pth'
    model = torch_mae(SPEC, seed=3)
    torch.save({'model': model.state_dict(), 'epoch': 799, 'args': None}, path)
    return path, model


def test_an_fb_checkpoint_needs_its_head_counts_and_says_which(fb_checkpoint, tmp_path):
    path, _ = fb_checkpoint
    result = run_command('convert', path, tmp_path / 'mae.safetensors')
    assert_one_line_error(result, 'mae-convert')
    assert 'pass --num_heads' in result.stderr


def test_an_fb_checkpoint_round_trips_bit_exact_in_its_own_layout(fb_checkpoint, tmp_path, capsys):
    path, model = fb_checkpoint
    assert convert.main([str(path), str(tmp_path / 'mae.safetensors'), *HEADS]) == 0
    out = capsys.readouterr().out
    assert re.search(r'^ +num_heads +3 +given$', out, re.M)
    assert re.search(r'^ +layer_norm_eps +1e-06 +assumed$', out, re.M)
    assert convert.main([str(tmp_path / 'mae.safetensors'), str(tmp_path / 'back.pth')]) == 0
    back = torch.load(tmp_path / 'back.pth', weights_only=True)  # plain tensors: no pickled classes
    assert list(back) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(back[key], value), key


def test_an_encoder_file_loads_its_encoder_and_decoder_commands_refuse_it(fb_checkpoint, tmp_path):
    # facebookresearch/mae's mae_pretrain_vit_*.pth and timm's vit_*.mae hold the encoder alone
    _, model = fb_checkpoint
    encoder = {k: v for k, v in model.state_dict().items() if not k.startswith(('decoder', 'mask_token'))}
    torch.save({'model': encoder}, tmp_path / 'mae_pretrain.pth')
    loaded = read_model(tmp_path / 'mae_pretrain.pth', {'num_heads': 3})
    assert loaded.encoder_only and loaded.sources['decoder_embed_dim'] == 'assumed'
    assert list(loaded.torch_arrays) == list(encoder)  # the encoder's keys, no decoder made up
    with pytest.raises(UsageError, match='holds an encoder alone'):
        loaded.needs_decoder('mae-reconstruct')
    np.testing.assert_array_equal(
        loaded.model.blocks[0].attn.qkv.kernel[...], encoder['blocks.0.attn.qkv.weight'].numpy().T
    )


def test_an_hf_folder_needs_no_flags_and_the_tools_run_on_it(fb_checkpoint, tmp_path, capsys):
    path, _ = fb_checkpoint
    assert convert.main([str(path), str(tmp_path / 'hub'), '--to', 'hf', *HEADS]) == 0
    assert convert.main([str(tmp_path / 'hub'), str(tmp_path / 'mae.pt')]) == 0
    assert re.search(r'^ +num_heads +3 +from config.json$', capsys.readouterr().out, re.M)
    image = tmp_path / 'image.png'
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(image)
    for checkpoint in (tmp_path / 'hub', tmp_path / 'mae.pt'):
        assert reconstruct.main([str(checkpoint), str(image), '--out', str(tmp_path / 'grid.png')]) == 0
        assert '12 of 16 patches masked' in capsys.readouterr().out  # keeps int(16 * 0.25) = 4
    parity = run_command('parity', tmp_path / 'mae.pt', '--grads')
    assert parity.returncode == 0 and parity.stdout.strip().endswith('all pass'), parity.stdout + parity.stderr


def test_flags_of_the_other_family_are_refused(fb_checkpoint):
    path, _ = fb_checkpoint
    with pytest.raises(UsageError, match='is a official-family model: --heads does not apply to it'):
        read_model(path, {'heads': 3})


def test_loading_reports_no_warning_for_a_whole_mae(fb_checkpoint):
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        read_model(fb_checkpoint[0], {'num_heads': 3, 'decoder_num_heads': 2})

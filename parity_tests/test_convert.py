"""The converter: torch -> Flax -> torch is bit-exact, files round-trip, and nothing loads partially."""

import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import mae_flax
from mae_core.official import sincos_pos_embed
from mae_flax.convert import (
    load_state_dict_file,
    load_torch_state_dict,
    save_state_dict_file,
    to_torch_state_dict,
    unwrap_state_dict,
)
from parity_tests.configs import CONFIGS
from parity_tests.pairs import flax_mae, mae_pair, official_spec, small_spec, torch_mae, vit_pair

REPO_ROOT = Path(__file__).resolve().parents[1]


def _assert_state_dicts_identical(torch_state, numpy_state, ordered=True):
    # in memory the keys come in torch's order; a .safetensors file stores them sorted
    assert list(numpy_state) == list(torch_state) if ordered else sorted(numpy_state) == sorted(torch_state)
    for key, value in torch_state.items():
        assert numpy_state[key].dtype == np.float32, key
        np.testing.assert_array_equal(numpy_state[key], value.numpy(), err_msg=key)


@pytest.mark.parametrize('config_name', list(CONFIGS))
def test_torch_to_flax_to_torch_is_bit_exact(config_name):
    torch_model, flax_model = mae_pair(CONFIGS[config_name])
    _assert_state_dicts_identical(torch_model.state_dict(), to_torch_state_dict(flax_model))


@pytest.mark.parametrize('pool', ['cls', 'mean'])
@pytest.mark.parametrize('num_classes', [0, 10])
def test_vit_round_trip_is_bit_exact(pool, num_classes):
    torch_vit, flax_vit = vit_pair(small_spec(pool=pool, num_classes=num_classes))
    _assert_state_dicts_identical(torch_vit.state_dict(), to_torch_state_dict(flax_vit))


def test_flax_to_torch_to_flax_is_bit_exact():
    flax_model = flax_mae(CONFIGS['cls'], seed=3)
    torch_model = torch_mae(CONFIGS['cls'], seed=4)
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state_dict(flax_model).items()})
    reloaded = load_torch_state_dict(flax_mae(CONFIGS['cls'], seed=5), torch_model.state_dict())
    for (path, expected), (_, actual) in zip(
        nnx.to_flat_state(nnx.state(flax_model, nnx.Param)),
        nnx.to_flat_state(nnx.state(reloaded, nnx.Param)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(actual[...]), np.asarray(expected[...]), err_msg=str(path))


def test_loaded_weights_are_copies_not_views_of_the_torch_tensors():
    torch_model, flax_model = mae_pair(CONFIGS['cls'])
    before = to_torch_state_dict(flax_model)
    with torch.no_grad():
        for param in torch_model.parameters():
            param.add_(1.0)
    after = to_torch_state_dict(flax_model)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_shared_patch_embedding_is_written_under_both_names():
    _, flax_model = mae_pair(CONFIGS['cls'])
    state = to_torch_state_dict(flax_model)
    for torch_index, mae_index in [(1, 0), (2, 1), (3, 2)]:
        for name in ('weight', 'bias'):
            np.testing.assert_array_equal(
                state[f'encoder.to_patch_embedding.{torch_index}.{name}'], state[f'patch_to_emb.{mae_index}.{name}']
            )


def test_every_problem_is_reported_at_once_and_nothing_is_loaded():
    torch_model, _ = mae_pair(CONFIGS['cls'])
    state = dict(torch_model.state_dict())
    del state['to_pixels.bias']
    state['decoder.layers.9.0.norm.weight'] = torch.zeros(32)
    state['mask_token'] = torch.zeros(7)
    flax_model = flax_mae(CONFIGS['cls'], seed=9)
    before = to_torch_state_dict(flax_model)
    with pytest.raises(ValueError, match='3 problems') as error:
        load_torch_state_dict(flax_model, state)
    message = str(error.value)
    assert "missing key 'to_pixels.bias'" in message
    assert "unexpected key 'decoder.layers.9.0.norm.weight'" in message
    assert "'mask_token' has shape (7,), expected (32,)" in message
    for key, value in to_torch_state_dict(flax_model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_linear_shape_errors_name_the_torch_layout():
    torch_model, flax_model = mae_pair(CONFIGS['cls'])
    state = dict(torch_model.state_dict())
    state['to_pixels.weight'] = state['to_pixels.weight'].T  # a kernel left in Flax layout
    with pytest.raises(ValueError, match=r"'to_pixels.weight' has shape \(32, 192\), expected \(192, 32\)"):
        load_torch_state_dict(flax_model, state)


def test_diverging_copies_of_the_shared_patch_embedding_are_an_error():
    torch_model, flax_model = mae_pair(CONFIGS['cls'])
    state = {key: value.clone() for key, value in torch_model.state_dict().items()}
    state['patch_to_emb.1.weight'] += 1
    with pytest.raises(ValueError, match="'patch_to_emb.1.weight' differs from 'encoder.to_patch_embedding.2.weight'"):
        load_torch_state_dict(flax_model, state)


def test_a_model_that_is_not_mae_flax_is_a_type_error():
    with pytest.raises(TypeError, match='expected a mae_flax model of a known family'):
        to_torch_state_dict(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize('suffix', ['.pt', '.pth', '.safetensors'])
def test_files_round_trip_bit_exact(tmp_path, suffix):
    torch_model, flax_model = mae_pair(CONFIGS['mean'])
    path = save_state_dict_file(to_torch_state_dict(flax_model), tmp_path / f'model{suffix}')
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    loaded = load_state_dict_file(path)
    torch_model.load_state_dict({key: torch.as_tensor(np.asarray(value)) for key, value in loaded.items()}, strict=True)
    _assert_state_dicts_identical(
        torch_model.state_dict(), {k: np.asarray(v) for k, v in loaded.items()}, ordered=False
    )
    reloaded = load_torch_state_dict(flax_mae(CONFIGS['mean'], seed=7), loaded)
    _assert_state_dicts_identical(torch_model.state_dict(), to_torch_state_dict(reloaded))


def test_a_torch_saved_state_dict_loads(tmp_path):
    torch_model, _ = mae_pair(CONFIGS['cls'])
    torch.save(torch_model.state_dict(), tmp_path / 'model.pt')
    flax_model = load_torch_state_dict(flax_mae(CONFIGS['cls'], seed=9), load_state_dict_file(tmp_path / 'model.pt'))
    _assert_state_dicts_identical(torch_model.state_dict(), to_torch_state_dict(flax_model))


def test_unknown_file_types_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r'expected a \.pt, \.pth or \.safetensors file name, got .*model\.bin'):
        save_state_dict_file({}, tmp_path / 'model.bin')
    (tmp_path / 'model.bin').write_bytes(b'')
    with pytest.raises(ValueError, match=r'expected a \.pt, \.pth or \.safetensors file, got .*model\.bin'):
        load_state_dict_file(tmp_path / 'model.bin')
    with pytest.raises(FileNotFoundError, match='no such checkpoint file'):
        load_state_dict_file(tmp_path / 'absent.pt')


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path):
    _, flax_model = mae_pair(CONFIGS['cls'])
    path = save_state_dict_file(to_torch_state_dict(flax_model), tmp_path / 'model.safetensors')
    before = path.read_bytes()
    with pytest.raises(TypeError, match="'bad': expected a numeric array or tensor, got object"):
        save_state_dict_file({'bad': object()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['model.safetensors']


def test_bfloat16_torch_weights_load_exactly():
    torch_model, _ = mae_pair(CONFIGS['cls'])
    state = {key: value.to(torch.bfloat16) for key, value in torch_model.state_dict().items()}
    flax_model = load_torch_state_dict(flax_mae(CONFIGS['cls']), state)
    assert flax_model.mask_token[...].dtype == jnp.float32
    for key, value in to_torch_state_dict(flax_model).items():
        np.testing.assert_array_equal(value, state[key].float().numpy(), err_msg=key)


def test_mae_flax_and_its_converter_import_without_torch(tmp_path):
    # a TPU host installs mae_flax without torch; safetensors files still convert there
    code = (
        'import sys; sys.modules["torch"] = None\n'
        'import numpy as np, mae_flax, mae_flax.convert as c\n'
        'c.save_state_dict_file({"w": np.ones(2, np.float32)}, sys.argv[1])\n'
        'print(c.load_state_dict_file(sys.argv[1])["w"].sum())\n'
        'c.save_state_dict_file({"w": np.ones(2, np.float32)}, sys.argv[1] + ".pt")\n'
    )
    result = subprocess.run(
        [sys.executable, '-c', code, str(tmp_path / 'w.safetensors')], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.stdout.strip() == '2.0', result.stderr
    assert 'reading or writing' in result.stderr and 'needs torch' in result.stderr


def test_wrappers_and_prefixes_are_removed():
    weights = {'pos_embedding': torch.zeros(2, 3)}
    for wrapped in (
        weights,
        {'state_dict': weights, 'epoch': 1},
        {'model': {f'module.{key}': value for key, value in weights.items()}, 'optimizer': {}},
        {'model_state_dict': {f'module._orig_mod.{key}': value for key, value in weights.items()}},
    ):
        assert unwrap_state_dict(wrapped, 'x.pt').keys() == weights.keys()
    with pytest.raises(ValueError, match='no tensors'):
        unwrap_state_dict({'epoch': 1}, 'x.pt')
    with pytest.raises(TypeError, match='holds a list, not a state dict of tensors'):
        unwrap_state_dict([1], 'x.pt')


def test_a_vit_pytorch_checkpoint_loads_at_another_resolution_with_its_positions_resampled():
    # 32px (4x4 patches) -> 48px (6x6): the learned rows are resampled as timm's resample_abs_pos_embed (bicubic)
    small, large = small_spec(pool='cls'), small_spec(pool='cls', image_size=48)
    state = torch_mae(small).state_dict()
    with pytest.warns(UserWarning, match='holds a 4x4 grid of positions, the model has 6x6: resampled bicubically'):
        model = load_torch_state_dict(flax_mae(large), state)
    grid = state['encoder.pos_embedding'][1:].reshape(4, 4, -1).permute(2, 0, 1)[None]
    expected = torch.nn.functional.interpolate(grid.double(), size=(6, 6), mode='bicubic', align_corners=False)
    expected = expected[0].permute(1, 2, 0).reshape(36, -1).float().numpy()
    np.testing.assert_allclose(np.asarray(model.encoder.pos_embedding[...])[1:], expected, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(model.encoder.pos_embedding[...])[0], state['encoder.pos_embedding'][0])
    assert np.isfinite(float(model(jnp.zeros((2, 48, 48, 3)), return_outputs=True).loss))


def test_an_official_checkpoint_loads_at_another_resolution_with_its_positions_recomputed():
    small, large = official_spec(), official_spec(img_size=48)
    with pytest.warns(UserWarning, match='the model has 36: its fixed sin-cos position embeddings are computed'):
        model = load_torch_state_dict(mae_flax.build(large, rngs=nnx.Rngs(0)), torch_mae(small).state_dict())
    np.testing.assert_array_equal(to_torch_state_dict(model)['pos_embed'], sincos_pos_embed(48, (6, 6)))
    assert np.isfinite(float(model(jnp.zeros((2, 48, 48, 3)), return_outputs=True).loss))

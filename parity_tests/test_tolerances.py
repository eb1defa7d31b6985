"""The tolerances are tight enough to catch the numerics traps between torch and JAX.

Each test puts one trap into the Flax model and checks that the stage comparison fails by more than 3x its
tolerance (measured on CPU: tanh GELU 5x, LayerNorm eps 1e-6 on low-variance images 2300x, one-pass variance on
offset images 15x; the faithful model stays below 0.2x). The loss alone, on standard-normal images, hides all three.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import mae_flax.layers
import mae_flax.official.mae
import mae_flax.vit_pytorch.vit
from mae_core.masking import MaskingConvention
from mae_flax.convert import load_torch_state_dict
from mae_flax.parity import scaled_error
from parity_tests import tolerances
from parity_tests.configs import CONFIGS
from parity_tests.pairs import images, mae_pair, noise, to_jax, to_numpy

CONFIG = CONFIGS['cls']


def _worst_error(kind, corrupt, config=CONFIG):
    """The largest (scaled error / tolerance) over the compared stages and the predictions, between torch and a
    Flax model changed by `corrupt`; run eagerly, so no compiled function is reused. Above 1 fails parity."""
    torch_model, flax_model = mae_pair(config)
    corrupt(flax_model)
    img, masking_noise = images(kind, config), noise(config)
    with torch.no_grad():
        expected = torch_model(img, noise=masking_noise, return_outputs=True)
    actual = flax_model(to_jax(img), noise=to_jax(masking_noise), return_outputs=True)
    ratios = [
        scaled_error(to_numpy(expected.intermediates[stage]), actual.intermediates[stage]) / tolerances.STAGE[kind]
        for stage in ('patch_embedding', 'encoded_tokens', 'decoded_tokens')
    ]
    ratios.append(
        scaled_error(to_numpy(expected.pred_pixel_values), actual.pred_pixel_values) / tolerances.PREDICTIONS[kind]
    )
    return max(ratios)


def _layer_norms(model):
    return [module for _, module in nnx.iter_modules(model) if isinstance(module, nnx.LayerNorm)]


def _set_on_layer_norms(name, value):
    def corrupt(model):
        for norm in _layer_norms(model):
            setattr(norm, name, value)

    return corrupt


@pytest.mark.parametrize('kind', ['normal', 'low_variance', 'offset'])
def test_the_faithful_model_passes(kind):
    assert _worst_error(kind, lambda model: None) <= 1


def test_tanh_gelu_is_caught(monkeypatch):
    # jax.nn.gelu's default, approximate=True
    monkeypatch.setattr(mae_flax.vit_pytorch.vit, 'gelu', functools.partial(jax.nn.gelu, approximate=True))
    assert _worst_error('normal', lambda model: None) > 3


def test_flax_gelu_is_exact_and_as_accurate_as_torch_s():
    # both compute x / 2 * (1 + erf(x / sqrt 2)) in float32; for x << 0, 1 + erf cancels, so both are ~1e-6 off in
    # absolute terms on values near 0 (observed: torch 9.0e-7, JAX 6.6e-7 from the float64 value); tanh GELU is 1e-3 off
    x = np.linspace(-8, 8, 1001, dtype=np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    torch_error = np.abs(torch.nn.functional.gelu(torch.from_numpy(x)).numpy() - exact).max()
    flax_error = np.abs(np.asarray(mae_flax.layers.gelu(jnp.asarray(x))) - exact).max()
    assert flax_error <= max(torch_error, 1e-6)


def test_flax_default_layer_norm_epsilon_is_caught():
    # flax's default 1e-6 against torch's 1e-5: invisible on unit-variance inputs, large on low-variance ones
    assert _worst_error('low_variance', _set_on_layer_norms('epsilon', 1e-6)) > 3


def test_fast_variance_is_caught():
    # E[x^2] - E[x]^2 cancels catastrophically on inputs with a large mean
    assert _worst_error('offset', _set_on_layer_norms('use_fast_variance', True)) > 3


def test_every_layer_norm_is_torch_like():
    _, flax_model = mae_pair(CONFIG)
    norms = _layer_norms(flax_model)
    # patch embedding (2), two per block and a final one in the encoder and the decoder
    assert len(norms) == 2 + 2 * CONFIG.encoder['depth'] + 1 + 2 * CONFIG.mae['decoder_depth'] + 1
    assert all(norm.epsilon == 1e-5 and not norm.use_fast_variance for norm in norms)


# the official family's own traps: facebookresearch/mae's eps, its sin-cos layout, its masking convention
OFFICIAL = CONFIGS['official']


def _unchanged(model):
    return None


@pytest.mark.parametrize('kind', ['normal', 'low_variance'])
def test_the_faithful_official_model_passes(kind):
    assert _worst_error(kind, _unchanged, OFFICIAL) <= 1


def test_torch_s_default_epsilon_in_an_official_model_is_caught():
    # facebookresearch/mae's LayerNorms use 1e-6; torch's default 1e-5 shows on low-variance inputs
    assert _worst_error('low_variance', _set_on_layer_norms('epsilon', 1e-5), OFFICIAL) > 3


def test_tanh_gelu_in_an_official_model_is_caught(monkeypatch):
    monkeypatch.setattr(mae_flax.official.mae, 'gelu', functools.partial(jax.nn.gelu, approximate=True))
    assert _worst_error('normal', _unchanged, OFFICIAL) > 3


def test_swapped_sin_cos_halves_are_caught():
    # HuggingFace's canonical [sin_h | cos_h | sin_w | cos_w] is NOT what the published weights were trained with
    def swapped(model):
        for table in (model.pos_embed, model.decoder_pos_embed):
            value = np.asarray(table[...])
            half = value.shape[-1] // 2
            table.set_value(jnp.asarray(np.concatenate([value[..., half:], value[..., :half]], axis=-1)))

    assert _worst_error('normal', swapped, OFFICIAL) > 3


def test_a_checkpoint_whose_table_is_not_sin_cos_is_computed_with_and_said_in_one_warning():
    # the file's table is what the program that wrote it computes with (transformers' zeros, or these swapped
    # halves): the model keeps it as a fixed table, the torch twin loads the same, and they agree (issue 18)
    torch_model, _ = mae_pair(OFFICIAL)
    state = torch_model.state_dict()
    half = state['pos_embed'].shape[-1] // 2
    state['pos_embed'] = torch.cat([state['pos_embed'][..., half:], state['pos_embed'][..., :half]], dim=-1)
    with pytest.warns(UserWarning, match=r"'pos_embed' is not the sin-cos position embedding \(max abs difference"):
        flax_model = load_torch_state_dict(mae_flax.build(OFFICIAL, rngs=nnx.Rngs(0)), state)
    np.testing.assert_array_equal(np.asarray(flax_model.pos_embed[...]), state['pos_embed'].numpy())
    torch_model.load_state_dict(state)
    img, masking_noise = images('normal', OFFICIAL), noise(OFFICIAL)
    with torch.no_grad():
        expected = torch_model(img, noise=masking_noise, return_outputs=True).loss.item()
    actual = float(flax_model(to_jax(img), noise=to_jax(masking_noise), return_outputs=True).loss)
    assert actual == pytest.approx(expected, rel=2e-6)


@pytest.mark.parametrize(
    ('convention', 'what'),
    [
        (MaskingConvention(masks_smallest=True, rounds_masked=False), 'the masked end'),
        (MaskingConvention(masks_smallest=False, rounds_masked=True), 'the rounding'),
    ],
)
def test_vit_pytorch_s_masking_in_an_official_model_is_caught(monkeypatch, convention, what):
    # with 0.7 of 16 patches the two roundings differ (11 vs 12 masked); either change gives other masks
    config = CONFIGS['official_fractional_mask']
    torch_model, _ = mae_pair(config)
    monkeypatch.setattr(mae_flax.official.mae, 'MASKING', convention)
    _, flax_model = mae_pair(config)
    img, masking_noise = images('normal', config), noise(config)
    with torch.no_grad():
        expected = torch_model(img, noise=masking_noise, return_outputs=True).masked_indices.numpy()
    actual = np.asarray(flax_model(to_jax(img), noise=to_jax(masking_noise), return_outputs=True).masked_indices)
    assert expected.shape != actual.shape or not np.array_equal(expected, actual), what

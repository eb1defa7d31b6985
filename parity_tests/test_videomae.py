"""The VideoMAE family against HuggingFace transformers' VideoMAEForPreTraining, VideoMAEModel and
VideoMAEForVideoClassification, built in memory from tiny configs: the same weights and bool_masked_pos give the
same loss and logits; the torch twin (MCG-NJU's keys) and the Flax model agree stage by stage and in their
gradients (the layouts and files: test_videomae_files.py; the shared twins: video_twins.py).

Facts about transformers 5.24 this relies on (checked here, so the comparison is honest):
- the fixed sinusoid tables are plain tensors, in no state dict: every other weight is loaded strictly from ours;
- its decoder's final norm is a plain nn.LayerNorm (eps 1e-5 whatever layer_norm_eps says), as is the classifier's
  fc_norm; its loss un-normalises 3-channel frames with ImageNet's constants, norm_pix_loss or not;
- its sdpa attention differs from eager by ~1e-6: the config asks for eager before the model is built;
- LayerNorm scales and biases, q and v biases and Linear biases start at 1 or 0: they are randomised in the torch
  twin, so that a swapped norm, a misplaced bias or a wrong epsilon would show.
Tolerances, float32 on the CPU: the loss within parity_tests/tolerances.py's LOSS relative (2e-6 on normal and
low-variance videos, observed <= 5e-7; 2e-5 on offset ones, observed <= 5e-6, where norm_pix_loss standardises
tubelets of 50 + 0.01 * randn), the logits within 1e-5 of their scale on every kind (observed <= 5e-7). The torch
twin runs transformers' own operations: observed exact.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from einops import rearrange
from flax import nnx

import mae_flax
import mae_torch
from mae_core import videomae
from mae_core.contract import STAGES
from mae_flax import families
from mae_flax.convert import load_torch_state_dict, to_torch_state_dict
from mae_flax.parity import flax_outputs, scaled_error, torch_outputs
from mae_flax.train import optim
from mae_flax.videomae import POOLS
from mae_flax.videomae.tubes import tube_mask
from parity_tests import tolerances
from parity_tests.oracles import transformers
from parity_tests.video_twins import CASES, random_mask, to_jax, transformers_model, twins, videos

KINDS = ('normal', 'low_variance', 'offset')
LOGITS = 1e-5


@nnx.jit
def _flax_forward(model, x, bool_masked_pos):
    return model(x, bool_masked_pos=bool_masked_pos, return_outputs=True)


@nnx.jit
def _flax_encode(model, x, bool_masked_pos):
    return model.encode(x), model.encode(x, bool_masked_pos)


def test_keywords_and_defaults_are_transformers_config_s_in_both_backends():
    config = transformers().VideoMAEConfig()
    defaults = videomae.ENCODER_DEFAULTS | videomae.MAE_DEFAULTS
    for field, value in defaults.items():
        name = {'qkv_bias': 'qv_bias'}.get(field, field)
        if field not in ('decoder_norm_eps', 'mask_ratio'):  # not config fields
            assert getattr(config, name) == value, field
    for cls in (mae_torch.videomae.VideoMAE, mae_flax.videomae.VideoMAE):
        parameters = inspect.signature(cls.__init__).parameters
        assert {name: parameters[name].default for name in defaults} == defaults


def test_the_sinusoid_table_is_transformers_own_bit_for_bit():
    build = transformers().models.videomae.modeling_videomae.get_sinusoid_encoding_table
    for positions, width in ((392, 96), (32, 16), (48, 30)):
        np.testing.assert_array_equal(videomae.sinusoid_table(positions, width), build(positions, width).numpy())


def test_tubelets_are_laid_out_as_the_conv3d_sees_them_and_unpatchify_inverts_them():
    video = np.random.default_rng(0).random((2, 4, 16, 24, 3), np.float32)  # (b, t, h, w, c)
    patches = mae_flax.videomae.patchify(video, 2, 4)
    assert patches.shape == (2, 2 * 4 * 6, 2 * 4 * 4 * 3)
    np.testing.assert_array_equal(patches[1, 6 + 1].reshape(2, 4, 4, 3), video[1, 0:2, 4:8, 4:8])  # (t, h, w) order
    np.testing.assert_array_equal(mae_flax.videomae.unpatchify(patches, (2, 4, 6), 2, 4, 3), video)
    as_torch = torch.from_numpy(np.moveaxis(video, -1, 2))  # (b, t, c, h, w)
    np.testing.assert_array_equal(mae_torch.videomae.patchify(as_torch, 2, 4).numpy(), patches)


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('case', CASES)
def test_loss_and_logits_agree_with_transformers(case, kind):
    torch_model, flax_model, hf_model = twins(case)
    x, mask = videos(kind, CASES[case]), random_mask(torch_model)
    with torch.no_grad():
        expected = hf_model(pixel_values=x, bool_masked_pos=mask)
        loss, logits = torch_model(x, bool_masked_pos=mask)
    flax_out = _flax_forward(flax_model, to_jax(x), jnp.asarray(mask.numpy()))

    assert expected.logits.shape == (2, torch_model.num_masked_tokens, logits.shape[-1])
    for ours_loss, ours_logits in ((loss.item(), logits.numpy()), (float(flax_out.loss), flax_out.pred_pixel_values)):
        np.testing.assert_allclose(ours_loss, expected.loss.item(), rtol=tolerances.LOSS[kind])
        assert scaled_error(expected.logits.numpy(), ours_logits) <= LOGITS


def test_the_loss_comparison_catches_each_detail_of_transformers_targets():
    # on low-variance videos each one moves the loss by far more than the tolerance
    torch_model, _, hf_model = twins('norm_pix')
    x, mask = videos('low_variance', CASES['norm_pix']), random_mask(torch_model)
    with torch.no_grad():
        expected = hf_model(pixel_values=x, bool_masked_pos=mask)
    mean = torch.tensor(videomae.TARGET_MEAN)[:, None, None]
    std = torch.tensor(videomae.TARGET_STD)[:, None, None]

    def loss(frames, standardise):
        values = rearrange(frames, 'b (t pt) c (h p) (w q) -> b (t h w) (pt p q) c', pt=2, p=4, q=4)
        targets = rearrange(standardise(values - values.mean(dim=-2, keepdim=True), values), 'b n s c -> b n (s c)')
        return torch.nn.functional.mse_loss(expected.logits, targets[mask].reshape(2, -1, 96)).item()

    def transformers_own(centred, values):
        return centred / (values.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)

    assert loss(x * std + mean, transformers_own) == pytest.approx(expected.loss.item(), rel=tolerances.LOSS['normal'])
    variants = {
        'frames not un-normalised': loss(x, transformers_own),
        'eps inside the square root': loss(
            x * std + mean, lambda c, v: c / (v.var(dim=-2, unbiased=True, keepdim=True) + 1e-6).sqrt()
        ),
        'biased variance': loss(
            x * std + mean, lambda c, v: c / (v.var(dim=-2, unbiased=False, keepdim=True).sqrt() + 1e-6)
        ),
    }
    for name, value in variants.items():
        assert abs(value - expected.loss.item()) > 10 * tolerances.LOSS['low_variance'] * expected.loss.item(), name


def test_layer_norm_epsilons_are_transformers_s():
    # too small an effect to show in outputs (~1e-6): checked where they are set
    torch_model, flax_model, hf_model = twins('norm_pix')
    theirs = sorted(module.eps for module in hf_model.modules() if isinstance(module, torch.nn.LayerNorm))
    assert set(theirs) == {1e-12, 1e-5}  # layer_norm_eps, and the decoder's plain nn.LayerNorm
    assert sorted(module.eps for module in torch_model.modules() if isinstance(module, torch.nn.LayerNorm)) == theirs
    assert sorted(node.epsilon for _, node in nnx.iter_graph(flax_model) if isinstance(node, nnx.LayerNorm)) == theirs


def test_masking_noise_makes_a_tube_mask_that_keeps_the_smallest_noise():
    # TubeMaskingGenerator's count: int(0.7 * 16) = 11 masked a frame (keeping int(16 * 0.3) would mask 12)
    assert videomae.MASKING.num_masked(0.7, 16) == 11
    torch_model, flax_model, _ = twins('norm_pix')
    noise = torch.rand(3, torch_model.num_patches, generator=torch.Generator().manual_seed(4))
    mask, count = torch_model.masking(3, noise)
    flax_mask = jax.jit(tube_mask, static_argnums=(1, 2))(jnp.asarray(noise.numpy()), 12, 2)
    np.testing.assert_array_equal(np.asarray(flax_mask), mask.numpy())
    assert count == flax_model.num_masked_tokens == 2 * 12
    frames = mask.reshape(3, 2, 16)
    assert (frames == frames[:, :1]).all()  # the same patches masked in every frame-group
    kept = ~frames[:, 0]
    assert (kept.sum(dim=1) == 4).all()
    assert (noise[kept].reshape(3, 4).max(dim=1).values < noise[~kept].reshape(3, 12).min(dim=1).values).all()
    # a call with the noise is a call with its mask
    x = videos('normal', CASES['norm_pix'], batch=3)
    with torch.no_grad():
        assert torch_model(x, noise=noise)[0].item() == torch_model(x, bool_masked_pos=mask)[0].item()


def test_torch_twin_and_flax_agree_stage_by_stage_and_in_gradients():
    torch_model, flax_model, _ = twins('norm_pix')  # q and v biases, the encoder's final norm, norm_pix_loss
    spec = CASES['norm_pix']
    x = np.asarray(to_jax(videos('normal', spec)))  # (b, t, h, w, c)
    noise = torch.rand(2, spec.num_patches, generator=torch.Generator().manual_seed(5)).numpy()
    torch_model.zero_grad(set_to_none=True)
    torch_out, torch_grads = torch_outputs(torch_model, x, noise, grads=True)
    flax_out, flax_grads = flax_outputs(flax_model, x, noise, grads=True)

    np.testing.assert_array_equal(torch_out.masked_indices, flax_out.masked_indices)
    np.testing.assert_array_equal(torch_out.unmasked_indices, flax_out.unmasked_indices)
    np.testing.assert_array_equal(torch_out.intermediates['patches'], flax_out.intermediates['patches'])
    np.testing.assert_allclose(flax_out.masked_patches, torch_out.masked_patches, rtol=1e-6, atol=1e-6)
    for stage in STAGES:
        error = scaled_error(torch_out.intermediates[stage], flax_out.intermediates[stage])
        assert error <= tolerances.STAGE['normal'], f'{stage}: {error:.2e}'
    assert scaled_error(torch_out.pred_pixel_values, flax_out.pred_pixel_values) <= LOGITS
    np.testing.assert_allclose(flax_out.loss, torch_out.loss, rtol=tolerances.LOSS['normal'])
    assert set(flax_grads) == set(torch_grads)  # every parameter, and the input
    errors = {key: scaled_error(value, flax_grads[key]) for key, value in torch_grads.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-5, f'{worst}: gradient error {errors[worst]:.2e}'


def test_the_encoder_is_transformers_videomae_model():
    _, flax_model, _ = twins('norm_pix')  # with the final norm (use_mean_pooling off)
    model = transformers_model(CASES['norm_pix'], to_torch_state_dict(flax_model, layout='hf5_model'), 'VideoMAEModel')
    x, mask = videos('normal', CASES['norm_pix']), random_mask(flax_model)
    with torch.no_grad():
        every_token = model(pixel_values=x).last_hidden_state
        visible = model(pixel_values=x, bool_masked_pos=mask).last_hidden_state
    ours = _flax_encode(flax_model, to_jax(x), jnp.asarray(mask.numpy()))
    assert visible.shape == (2, flax_model.seq_length - flax_model.num_masked_tokens, 32)
    for expected, actual in zip((every_token, visible), ours, strict=True):
        assert scaled_error(expected.numpy(), actual) <= tolerances.STAGE['normal']


@pytest.mark.parametrize('pool', POOLS)
def test_the_classifier_is_transformers_video_classification(pool):
    spec = CASES['norm_pix']  # an encoder with its final norm, which pool 'first' uses
    _, mae, _ = twins('norm_pix')
    family = families.get('videomae')
    torch.manual_seed(0)
    twin = family.build_classifier_torch(spec, num_classes=5, pool=pool)
    # what mae-finetune does: the MAE's encoder (MCG-NJU's encoder-alone keys) with a fresh head and fc_norm
    own, encoder = twin.state_dict(), to_torch_state_dict(mae, encoder_only=True)
    merged = {key: own[key].numpy() if key.startswith(family.fresh) else encoder[key] for key in own}
    for key in merged:
        if key.startswith('fc_norm.'):
            merged[key] = merged[key] + np.random.default_rng(0).normal(0, 0.5, merged[key].shape).astype(np.float32)
    twin.load_state_dict({key: torch.from_numpy(value) for key, value in merged.items()}, strict=True)
    abstract = nnx.eval_shape(lambda: family.build_classifier(spec, num_classes=5, pool=pool, rngs=nnx.Rngs(0)))
    classifier = load_torch_state_dict(abstract, merged)
    hf_state = to_torch_state_dict(mae, layout='hf5', encoder_only=True)
    if pool == 'mean':  # transformers' use_mean_pooling: no final norm, fc_norm instead
        hf_state = {key: value for key, value in hf_state.items() if 'layernorm.' not in key}
        hf_state |= {key: value for key, value in merged.items() if key.startswith('fc_norm.')}
    hf_state |= {'classifier.weight': merged['head.weight'], 'classifier.bias': merged['head.bias']}
    hf_spec = spec.with_fields('encoder', use_mean_pooling=pool == 'mean')
    hf_model = transformers_model(hf_spec, hf_state, 'VideoMAEForVideoClassification', num_labels=5)

    x = videos('normal', spec)
    with torch.no_grad():
        expected, from_twin = hf_model(pixel_values=x).logits.numpy(), twin.eval()(x).numpy()
    assert scaled_error(expected, from_twin) <= LOGITS
    assert scaled_error(expected, nnx.jit(lambda m, v: m(v))(classifier, to_jax(x))) <= LOGITS


def test_the_classifier_builds_as_mae_finetune_asks():
    family = families.get('videomae')
    spec = CASES['no_qkv_bias_mean_pooling']
    classifier = family.build_classifier(
        spec, num_classes=3, pool='mean', drop_path_rate=0.1, head_norm=True, scan_layers=True, rngs=nnx.Rngs(0)
    )
    assert not np.asarray(classifier.head.kernel[...]).any()  # head_std 0: every class equally likely at first
    np.testing.assert_allclose(classifier.blocks.stacked.drop_path.rate[...], [0.0, 0.1])  # timm's linear rule
    assert classifier.head_norm is not None and len(classifier.blocks) == 2
    twin = family.build_classifier_torch(spec, num_classes=3, pool='mean')
    assert list(to_torch_state_dict(classifier)) == list(twin.state_dict())  # MCG-NJU's fine-tuning keys
    with pytest.raises(ValueError, match="pool must be one of \\('mean', 'first'\\)"):
        family.build_classifier(spec, num_classes=3, pool='token', rngs=nnx.Rngs(0))


def test_weight_decay_and_layer_decay_follow_mcg_nju():
    family = families.get('videomae')
    model = nnx.eval_shape(lambda: mae_flax.build(CASES['norm_pix'], rngs=nnx.Rngs(0)))
    mask = optim.weight_decay_mask(nnx.to_pure_dict(nnx.state(model, nnx.Param)), family.decays)
    flat = {jax.tree_util.keystr(path): decays for path, decays in jax.tree_util.tree_leaves_with_path(mask)}
    assert not flat["['mask_token']"] and flat["['encoder_to_decoder']['kernel']"]
    assert flat["['encoder']['blocks'][0]['attn']['qkv']['kernel']"]
    assert not flat["['encoder']['blocks'][0]['attn']['q_bias']"] and not flat["['decoder']['norm']['scale']"]
    assert not any('pos_embed' in key for key in flat)  # constants, not parameters
    assert [family.layer_id(names, 2) for names in (('patch_embed', 'proj'), ('blocks', '1', 'norm1'), ('head',))] == [
        0,
        2,
        3,
    ]


@pytest.mark.parametrize('backend', ['torch', 'flax'])
def test_bad_input_is_a_clear_error(backend):
    torch_model, flax_model, _ = twins('norm_pix')
    x = videos('normal', CASES['norm_pix'])
    if backend == 'torch':
        model, x, array = torch_model, x, torch.from_numpy
    else:
        model, x, array = flax_model, np.asarray(to_jax(x)), np.asarray
    mask = random_mask(torch_model).numpy()
    with pytest.raises(ValueError, match=r'expected videos of shape \(batch, 4, '):
        model(x[:, :3])
    with pytest.raises(ValueError, match='every video must mask the same number of tokens, got \\[23, 24\\]'):
        uneven = mask.copy()
        uneven[0, np.flatnonzero(uneven[0])[0]] = False
        model(x, bool_masked_pos=array(uneven))
    with pytest.raises(TypeError, match='expected a boolean bool_masked_pos'):
        model(x, bool_masked_pos=array(mask.astype(np.int64)))
    with pytest.raises(ValueError, match='not both'):
        model(x, noise=array(np.zeros((2, 16), np.float32)), bool_masked_pos=array(mask))
    with pytest.raises(ValueError, match='num_frames 5 must be divisible by tubelet_size 2'):
        mae_flax.build(CASES['norm_pix'].with_fields('encoder', num_frames=5), rngs=nnx.Rngs(0))

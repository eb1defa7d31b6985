"""The official family is facebookresearch/mae's MaskedAutoencoderViT: its keywords, sizes, initialisation, position
tables, weight-decay rule and input checks."""

import inspect

import jax
import numpy as np
import pytest
import torch
from flax import nnx

import mae_flax
import mae_torch
from mae_core.official import sincos_pos_embed
from mae_flax import families
from mae_flax.train import optim
from parity_tests.configs import CONFIGS
from parity_tests.oracles import transformers
from parity_tests.pairs import mae_pair

# facebookresearch/mae's models_mae.MaskedAutoencoderViT.__init__, as published
UPSTREAM_DEFAULTS = dict(
    img_size=224, patch_size=16, in_chans=3, embed_dim=1024, depth=24, num_heads=16, decoder_embed_dim=512,
    decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.0, norm_layer=None, norm_pix_loss=False,
)  # fmt: skip


def test_keywords_and_defaults_are_upstream_s_in_both_backends():
    for cls in (mae_torch.MaskedAutoencoderViT, mae_flax.MaskedAutoencoderViT):
        parameters = inspect.signature(cls.__init__).parameters
        positional = {name: p.default for name, p in parameters.items() if p.kind == p.POSITIONAL_OR_KEYWORD}
        positional.pop('self')
        expected = (
            UPSTREAM_DEFAULTS
            if cls is mae_torch.MaskedAutoencoderViT
            else {
                k: v
                for k, v in UPSTREAM_DEFAULTS.items()
                if k != 'norm_layer'  # Flax takes layer_norm_eps alone
            }
        )
        assert positional == expected
        assert parameters['layer_norm_eps'].default == 1e-6 and parameters['mask_ratio'].default == 0.75


def test_mae_vit_base_has_upstream_s_state_dict_and_initialisation():
    torch.manual_seed(0)
    model = mae_torch.mae_vit_base_patch16()
    state = model.state_dict()
    assert sum(value.numel() for value in state.values()) == 111_907_840
    assert list(state)[:4] == ['cls_token', 'pos_embed', 'mask_token', 'decoder_pos_embed']  # upstream's order
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    # xavier_uniform Linears (bound sqrt(6 / (fan_in + fan_out))), zero biases, LayerNorm 1 / 0, normal(0.02) tokens
    bound = (6 / (768 + 3 * 768)) ** 0.5
    qkv = state['blocks.0.attn.qkv.weight']
    assert qkv.abs().max() <= bound and qkv.abs().max() > 0.99 * bound
    assert not state['blocks.0.attn.qkv.bias'].any() and (state['norm.weight'] == 1).all()
    assert 0.018 < state['cls_token'].std() < 0.022 and 0.018 < state['mask_token'].std() < 0.022
    np.testing.assert_array_equal(state['pos_embed'].numpy(), sincos_pos_embed(768, 14))


def test_sin_cos_tables_are_float64_ones_cast_and_equal_transformers_own():
    build = transformers().models.vit_mae.modeling_vit_mae.build_2d_sinusoidal_position_embedding
    for dim, grid in ((768, 14), (1024, 16), (1280, 16)):
        table = build(grid, grid, dim, cls_token=True)
        # transformers computes the canonical [h | w] halves and rotates them to the published weights' [w | h]
        table = torch.cat([table[..., dim // 2 :], table[..., : dim // 2]], dim=-1).numpy()
        np.testing.assert_array_equal(sincos_pos_embed(dim, grid)[0], table)
    # the same formula in float32 throughout gives other float32 values in a large share of the entries
    omega = 1.0 / np.float32(10000) ** (np.arange(192, dtype=np.float32) / np.float32(192))
    columns = np.einsum('m,d->md', np.tile(np.arange(14, dtype=np.float32), 14), omega)
    float32 = np.concatenate([np.sin(columns), np.cos(columns)], axis=1)  # the first half: the column's
    differ = np.mean(float32 != sincos_pos_embed(768, 14)[0, 1:, :384])
    assert differ > 0.2, differ


def test_weight_decay_follows_timm_s_rule():
    model = nnx.eval_shape(lambda: mae_flax.build(CONFIGS['official'], rngs=nnx.Rngs(0)))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    mask = optim.weight_decay_mask(params, families.of(model).decays)
    flat = {jax.tree_util.keystr(path): decays for path, decays in jax.tree_util.tree_leaves_with_path(mask)}
    assert flat["['cls_token']"] and flat["['mask_token']"]  # (1, 1, D): decayed upstream
    assert flat["['blocks'][0]['attn']['qkv']['kernel']"] and flat["['patch_embed']['proj']['kernel']"]
    assert not any(decays for key, decays in flat.items() if key.endswith(("['bias']", "['scale']")))
    assert not any('pos_embed' in key for key in flat)  # constants, not parameters


@pytest.mark.parametrize('backend', ['torch', 'flax'])
def test_bad_input_is_a_clear_error(backend):
    torch_model, flax_model = mae_pair(CONFIGS['official'])
    if backend == 'torch':
        with pytest.raises(ValueError, match=r'expected images of shape \(batch, 3, 32, 32\)'):
            torch_model(torch.zeros(2, 3, 16, 16))
        with pytest.raises(ValueError, match=r'expected noise of shape \(batch, num_patches\) = \(2, 16\)'):
            torch_model(torch.zeros(2, 3, 32, 32), noise=torch.rand(2, 15))
        # keeps int(16 * 0.01) = 0 patches
        with pytest.raises(ValueError, match='mask_ratio 0.99 masks 16 of 16 patches'):
            torch_model(torch.zeros(2, 3, 32, 32), mask_ratio=0.99)
    else:
        with pytest.raises(ValueError, match=r'expected images of shape \(batch, 32, 32, 3\)'):
            flax_model(np.zeros((2, 16, 16, 3), np.float32))
        with pytest.raises(TypeError, match='expected floating point noise'):
            flax_model(np.zeros((2, 32, 32, 3), np.float32), noise=np.zeros((2, 16), np.int32))
        with pytest.raises(ValueError, match='img_size \\(30, 30\\) must be divisible by patch_size \\(8, 8\\)'):
            mae_flax.MaskedAutoencoderViT(img_size=30, patch_size=8, embed_dim=48, num_heads=3, rngs=nnx.Rngs(0))

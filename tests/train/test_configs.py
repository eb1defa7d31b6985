"""The named variants build the models they claim (abstractly: nothing is allocated)."""

import functools
import math

import jax
import pytest

from mae_flax.configs import mae
from mae_flax.train import model_state, optim, steps


def parameter_counts(variant):
    config = mae.get_config(variant)
    tx, _ = optim.make_optimizer(config)
    params = jax.eval_shape(functools.partial(steps.init_state, config, tx))['params']
    count = lambda tree: sum(math.prod(x.shape) for x in jax.tree.leaves(tree))  # noqa: E731
    return config, count(params.get('encoder', {})), count(params)


@pytest.mark.parametrize(('variant', 'encoder_millions'), [('vit_b16', 85.8), ('vit_l16', 303.2)])
def test_paper_variants_have_the_paper_encoder_and_decoder(variant, encoder_millions):
    config, encoder, _ = parameter_counts(variant)
    # the paper's ViT-B/16 and ViT-L/16 (86M, 304M; here with a learned position embedding) at 224px
    assert encoder / 1e6 == pytest.approx(encoder_millions, abs=0.1)
    encoder, decoder = config.model.encoder, config.model.mae
    assert (encoder.image_size, encoder.patch_size) == (224, 16)
    assert (decoder.decoder_dim, decoder.decoder_depth, decoder.decoder_heads) == (512, 8, 16)
    assert decoder.decoder_dim_head == 32 and config.dtype == 'bfloat16'
    assert config.data.source is None  # ImageNet must be named on the command line


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="unknown config variant 'vit_h14'"):
        mae.get_config('vit_h14')


@pytest.mark.parametrize(
    ('variant', 'state_dict_values'),
    [('mae_vit_b16', 111_907_840), ('mae_vit_l16', 329_541_888), ('mae_vit_h14', 657_074_508)],
)
def test_official_variants_are_facebookresearch_s_factories(variant, state_dict_values):
    # upstream's state dicts hold the fixed sin-cos tables too: (1 + L) rows of the encoder's and the decoder's width
    config, _, params = parameter_counts(variant)
    spec = model_state.model_spec(config)
    fixed = (1 + spec.num_patches) * (spec.encoder['embed_dim'] + spec.mae['decoder_embed_dim'])
    assert params + fixed == state_dict_values
    assert spec.encoder['layer_norm_eps'] == 1e-6 and spec.mae['norm_pix_loss'] and config.dtype == 'bfloat16'

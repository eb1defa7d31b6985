"""The named variants build the models they claim (abstractly: nothing is allocated)."""

import functools
import math

import jax
import pytest

from mae_flax.configs import mae
from mae_flax.train import optim, trainer


def parameter_counts(variant):
    config = mae.get_config(variant)
    tx, _ = optim.make_optimizer(config)
    params = jax.eval_shape(functools.partial(trainer.init_state, config, tx))['params']
    count = lambda tree: sum(math.prod(x.shape) for x in jax.tree.leaves(tree))  # noqa: E731
    return config, count(params['encoder']), count(params)


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

"""Scanned blocks (mae_flax.stack, what mae-train runs) and rematerialisation compute the same function as the
per-block loop, with the same parameters: the same torch state dict out of the converter, the same loss and
gradients, and a program whose size does not grow with depth.

Tolerance: a scan and a loop run the same float32 operations, but XLA fuses and orders them differently inside
and across the loop body, so results agree to float32 rounding accumulated over a few blocks, not bitwise: 1e-5
of each array's scale (parity_tests.tolerances' float32 bound for a forward and backward pass is 1e-4; this is
tighter because both sides are the same library on the same device). The converted weights are equal bitwise.
"""

import functools

import jax
import numpy as np
import pytest
from flax import nnx

import mae_flax
from mae_flax import fixed_tables
from mae_flax.convert import load_torch_state_dict, to_torch_state_dict
from mae_flax.model_files import flax_params
from mae_flax.parity import flax_outputs, scaled_error
from mae_flax.stack import Scanned
from parity_tests.configs import CONFIGS
from parity_tests.pairs import images, noise, to_jax

RTOL = 1e-5


def scanned_twin(spec, remat='none'):
    """A fresh unscanned model, and a scanned one (with `remat`) holding the same weights through the converter."""
    loop = mae_flax.build(spec, rngs=nnx.Rngs(0))
    scanned = mae_flax.build(spec, rngs=nnx.Rngs(1), scan_layers=True, remat=remat)
    load_torch_state_dict(scanned, to_torch_state_dict(loop))
    return loop, scanned


def loss_and_grads(model, spec):
    """(loss, {torch key or 'input': gradient}): the parity library's, named per block through the converter."""
    out, gradients = flax_outputs(model, to_jax(images('offset', spec)), to_jax(noise(spec)), grads=True)
    return float(out.loss), gradients


def assert_close(actual, expected, name):
    error = scaled_error(expected, actual)
    assert error <= RTOL, f'{name}: scaled error {error:.2e} > {RTOL:.0e}'


@pytest.mark.parametrize('config_name', ['cls', 'official_one_channel_non_square'])
def test_scanned_blocks_convert_to_the_same_state_dict_and_compute_the_same_loss_and_gradients(config_name):
    spec = CONFIGS[config_name]
    loop, scanned = scanned_twin(spec)
    expected, converted = to_torch_state_dict(loop), to_torch_state_dict(scanned)
    assert list(converted) == list(expected)
    for key, array in expected.items():
        np.testing.assert_array_equal(converted[key], array, err_msg=key)
    assert flax_params(scanned).keys() == flax_params(loop).keys()  # Flax files: per-block keys either way

    loop_loss, loop_grads = loss_and_grads(loop, spec)
    scanned_loss, scanned_grads = loss_and_grads(scanned, spec)
    assert_close(np.float32(scanned_loss), np.float32(loop_loss), 'loss')
    assert scanned_grads.keys() == loop_grads.keys()
    for key, grad in loop_grads.items():
        assert_close(scanned_grads[key], grad, key)


@functools.cache
def without_remat(config_name, scan_layers):
    spec = CONFIGS[config_name]
    return loss_and_grads(mae_flax.build(spec, rngs=nnx.Rngs(0), scan_layers=scan_layers), spec)


@pytest.mark.parametrize(
    'config_name, scan_layers, remat',
    [('official', True, 'full'), ('official', True, 'dots_with_no_batch_dims_saveable'), ('cls', False, 'full')],
)
def test_remat_gives_the_same_loss_and_gradients(config_name, scan_layers, remat):
    spec = CONFIGS[config_name]
    plain_loss, plain_grads = without_remat(config_name, scan_layers)
    rematted = mae_flax.build(spec, rngs=nnx.Rngs(0), scan_layers=scan_layers, remat=remat)
    remat_loss, remat_grads = loss_and_grads(rematted, spec)
    assert_close(np.float32(remat_loss), np.float32(plain_loss), 'loss')
    for key, grad in plain_grads.items():
        assert_close(remat_grads[key], grad, key)


def test_a_scanned_program_does_not_grow_with_depth():
    def program_size(depth, scan_layers):
        spec = CONFIGS['official'].with_fields('encoder', depth=depth)
        model = nnx.eval_shape(lambda: mae_flax.build(spec, rngs=nnx.Rngs(0), scan_layers=scan_layers))
        fixed_tables.fill_computed(model)  # the sin-cos tables are values the program reads, not abstract weights
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        img, masking_noise = to_jax(images('normal', spec)), to_jax(noise(spec))

        def loss(params):
            return nnx.merge(graphdef, params, rest)(img, noise=masking_noise, return_outputs=True).loss

        return jax.jit(jax.grad(loss)).lower(params).as_text().count('\n')

    loop_2, loop_8 = program_size(2, False), program_size(8, False)
    scan_2, scan_8 = program_size(2, True), program_size(8, True)
    assert scan_8 <= 1.02 * scan_2, (scan_2, scan_8)  # one block's program, whatever the depth
    assert loop_8 > 2 * loop_2, (loop_2, loop_8)


def test_a_scanned_block_is_viewed_and_indexed_per_block():
    spec = CONFIGS['official']
    model = mae_flax.build(spec, rngs=nnx.Rngs(0), scan_layers=True)
    assert isinstance(model.blocks, Scanned) and len(model.blocks) == 2
    kernel = model.blocks.stacked.attn.qkv.kernel[...]
    np.testing.assert_array_equal(model.blocks[1].attn.qkv.kernel[...], kernel[1])
    np.testing.assert_array_equal(model.blocks[-2].attn.qkv.kernel[...], kernel[0])
    with pytest.raises(IndexError):
        model.blocks[2]
    with pytest.raises(ValueError, match="remat must be one of 'none'"):
        mae_flax.build(spec, rngs=nnx.Rngs(0), remat='everything')


def test_dropout_runs_under_the_scan_and_draws_new_masks_each_call():
    encoder = mae_flax.ViT(
        image_size=16, patch_size=4, num_classes=0, dim=16, depth=2, heads=2, dim_head=8, mlp_dim=32,
        dropout=0.5, scan_layers=True, rngs=nnx.Rngs(0),
    )  # fmt: skip
    img = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype(np.float32)
    forward = nnx.jit(lambda encoder, img: encoder(img))  # the rng streams advance inside, as in training
    first, second = np.asarray(forward(encoder, img)), np.asarray(forward(encoder, img))
    assert np.isfinite(first).all() and not np.array_equal(first, second)
    encoder.eval()
    np.testing.assert_array_equal(np.asarray(forward(encoder, img)), np.asarray(forward(encoder, img)))

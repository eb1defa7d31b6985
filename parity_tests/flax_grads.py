"""Gradients and optimizer steps of a mae_flax.MAE, as torch would see them (torch keys and layouts)."""

import jax
from flax import nnx

from mae_flax.convert import to_torch_state_dict


def loss_and_grads(model, img, masking_noise):
    """(loss, {torch key: d loss / d parameter}, d loss / d img), through the converter's table."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params, img):
        return nnx.merge(graphdef, params, rest)(img, noise=masking_noise)

    loss, (param_grads, img_grad) = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))(params, img)
    return loss, to_torch_state_dict(nnx.merge(graphdef, param_grads, rest)), img_grad

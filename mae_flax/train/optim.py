"""The optimizers of facebookresearch/mae's recipes.

Pretraining: AdamW (0.9, 0.95), weight decay by the model family's rule (vit-pytorch's: weight matrices only),
lr = base_lr * batch / 256, per-step linear warmup then cosine decay, optional global-norm clipping.
Fine-tuning: AdamW with weight decay on weight matrices only and layer-wise lr decay (block i of L gets
decay ** (L + 1 - (i + 1)), the embeddings decay ** (L + 1), the head 1); linear probing: LARS (optax.lars).
"""

import functools

import jax
import numpy as np
import optax

from mae_flax import families, stack


def weight_decay_mask(params, decays):
    """A pytree of bools like `params`: True where `decays(path)` says the parameter is weight-decayed."""
    return jax.tree_util.tree_map_with_path(lambda path, _: decays(path), params)


def learning_rate_schedule(optim_config, batch_size, total_steps):
    peak = optim_config.base_lr * batch_size / 256
    warmup = min(optim_config.warmup_steps, total_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=optim_config.min_lr,
    )


def make_optimizer(config):
    """(optax transformation, learning-rate schedule) for a training config."""
    optim_config = config.optim
    schedule = learning_rate_schedule(optim_config, config.batch_size, config.total_steps)
    decays = families.get(config.model.family).decays
    adamw = optax.adamw(
        schedule,
        b1=optim_config.b1,
        b2=optim_config.b2,
        weight_decay=optim_config.weight_decay,
        mask=lambda params: weight_decay_mask(params, decays),
    )
    if optim_config.grad_clip_norm > 0:
        adamw = optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), adamw)
    return adamw, schedule


def names_of(path):
    return tuple(str(getattr(key, 'key', key)) for key in path)


def lr_scales(params, family, depth, decay):
    """A tree like `params` of each parameter's layer-wise lr scale, decay ** (depth + 1 - layer) with the family's
    layers (facebookresearch/mae's param_groups_lrd); a scanned stack's scale is a column, one row per block."""

    def scale(path, leaf):
        names = names_of(path)
        if stack.STACKED in names:
            at = names.index(stack.STACKED)
            layers = [family.layer_id((*names[:at], str(i), *names[at + 1 :]), depth) for i in range(leaf.shape[0])]
            values = decay ** (depth + 1 - np.array(layers, np.float64))
            return values.reshape((-1,) + (1,) * (leaf.ndim - 1)).astype(np.float32)
        return np.float32(decay ** (depth + 1 - family.layer_id(names, depth)))

    return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_tree(scales):
    """Multiplies each update by its fixed scale (layer-wise lr decay after AdamW: the same as each parameter
    group's lr and decoupled weight decay scaled, as torch's param groups do)."""

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda update, scale: update * scale, updates, scales), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def kernel_decays(path):
    """Weight decay on weight matrices only: not on biases, norms, the cls token and position embeddings
    (facebookresearch/mae's fine-tuning: ndim 1 and its no_weight_decay list)."""
    return names_of(path)[-1] == 'kernel'


def make_classifier_optimizer(config, trainable, family, depth):
    """(optax transformation, lr schedule) for the trainable parameters."""
    optim_config = config.optim
    schedule = learning_rate_schedule(optim_config, config.batch_size, config.total_steps)
    mask = functools.partial(weight_decay_mask, decays=kernel_decays)
    if config.mode == 'linprobe':
        tx = optax.lars(
            schedule,
            weight_decay=optim_config.weight_decay,
            weight_decay_mask=mask,
            trust_ratio_mask=mask,
            momentum=optim_config.momentum,
        )
    else:
        tx = optax.adamw(
            schedule, b1=optim_config.b1, b2=optim_config.b2, weight_decay=optim_config.weight_decay, mask=mask
        )
        if optim_config.layer_decay < 1:
            tx = optax.chain(tx, scale_by_tree(lr_scales(trainable, family, depth, optim_config.layer_decay)))
    if optim_config.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), tx)
    return tx, schedule

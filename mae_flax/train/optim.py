"""facebookresearch/mae's optimizer: AdamW (0.9, 0.95), weight decay by the model family's rule (vit-pytorch's: weight
matrices only), lr = base_lr * batch / 256, per-step linear warmup then cosine decay, optional global-norm clipping."""

import jax
import optax

from mae_flax import families


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

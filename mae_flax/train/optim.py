"""facebookresearch/mae's optimizer: AdamW (0.9, 0.95), wd 0.05 on weight matrices only, lr = base_lr * batch / 256,
per-step linear warmup then cosine decay, optional global-norm clipping."""

import jax
import optax


def decays(path):
    """Weight decay applies to Linear kernels only: not to biases, LayerNorm scales and biases, position
    embeddings, the cls token or the mask token."""
    return getattr(path[-1], 'key', None) == 'kernel'


def weight_decay_mask(params):
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


def make_optimizer(optim_config, batch_size, total_steps):
    """(optax transformation, learning-rate schedule)."""
    schedule = learning_rate_schedule(optim_config, batch_size, total_steps)
    adamw = optax.adamw(
        schedule,
        b1=optim_config.b1,
        b2=optim_config.b2,
        weight_decay=optim_config.weight_decay,
        mask=weight_decay_mask,
    )
    if optim_config.grad_clip_norm > 0:
        adamw = optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), adamw)
    return adamw, schedule

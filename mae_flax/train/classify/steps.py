"""The classifier's model, state and step functions for mae-finetune and mae-linprobe, and the StepProgram the loop
runs (train/steps.py's, built from the same pieces as pretraining's: micro-batches, model parts, shardings).

- finetune: every parameter trained; mixup / cutmix, drop path, label smoothing.
- linprobe: the encoder frozen (its parameters are not differentiated, get no update and no optimizer state), a
  BatchNorm without affine parameters before the head.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx, traverse_util

from mae_core.errors import UsageError
from mae_flax import families
from mae_flax.train import optim, sharding
from mae_flax.train.classify.mixup import mix
from mae_flax.train.model_state import fsdp_min_size, model_parts
from mae_flax.train.steps import StepProgram, micro_batches


def pool_of(config, spec):
    """The classifier's pooling: config.classifier.pool, or the family's default for the mode (official: 'avg' to
    fine-tune, 'token' to probe, as facebookresearch/mae; vit-pytorch: the encoder's own)."""
    family = families.get(spec.family)
    pool = config.classifier.pool
    if not pool:
        return family.default_pool(spec, config.mode)
    if pool not in family.pools:
        raise UsageError(
            f'config.classifier.pool must be one of {family.pools} for the {family.name} family, got {pool!r}'
        )
    return pool


def build_classifier(config, spec, num_classes):
    """The run's classifier, its rngs made here so that `nnx.eval_shape(build)` traces them too."""
    family = families.get(spec.family)
    return family.build_classifier(
        spec,
        num_classes=num_classes,
        pool=pool_of(config, spec),
        drop_path_rate=config.classifier.drop_path_rate if config.mode == 'finetune' else 0.0,
        head_norm=config.mode == 'linprobe',
        head_std=config.classifier.head_init_std,
        dtype=jnp.dtype(config.dtype),
        scan_layers=config.scan_layers,
        remat=config.remat,
        rngs=classifier_rngs(config),
    )


def classifier_rngs(config):
    return nnx.Rngs(config.seed, dropout=config.seed + 3)


def partition(params, mode, head):
    """(trainable, frozen) halves of a parameter tree: everything is trained in fine-tuning, the head alone (the
    family's `head`, the same name in Flax and torch) in linear probing."""
    flat = traverse_util.flatten_dict(params, keep_empty_nodes=True)
    trains = (lambda path: True) if mode == 'finetune' else (lambda path: path[0] == head)
    trainable = {path: value for path, value in flat.items() if trains(path)}
    frozen = {path: value for path, value in flat.items() if not trains(path)}
    return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(frozen)


def combine(trainable, frozen):
    flat = traverse_util.flatten_dict(trainable, keep_empty_nodes=True)
    return traverse_util.unflatten_dict(flat | traverse_util.flatten_dict(frozen, keep_empty_nodes=True))


def init_state(config, spec, num_classes, tx):
    model = build_classifier(config, spec, num_classes)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    trainable, _ = partition(params, config.mode, families.of(model).head)
    state = dict(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(trainable),
        rng=jax.random.PRNGKey(config.seed + 1),  # step s draws its mixup and drop path from fold_in(rng, s)
    )
    batch_stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    return state | ({'batch_stats': batch_stats} if batch_stats else {})


def traced(rest):
    """The model's other state (rng streams, drop path rates) as new Variables of the current trace: Variables made
    outside a jit cannot be changed (reseeded) or carried through nnx.scan inside it."""
    return jax.tree.map(jnp.asarray, rest)


def make_train_step(config, spec, graphdef, rest, tx, schedule, mesh, num_classes):
    accum, mode, head = config.grad_accum_steps, config.mode, families.get(spec.family).head

    def loss_fn(trainable, frozen, batch_stats, images, targets, key):
        model = nnx.merge(graphdef, combine(trainable, frozen), *([batch_stats] if batch_stats else []), traced(rest))
        nnx.reseed(model, policy='match_shape', dropout=key)  # each step draws its own drop path masks
        model.train()
        if mode == 'linprobe':  # the frozen encoder is not differentiated: no backward pass through it
            logits = model.head_logits(jax.lax.stop_gradient(model.features(images)))
        else:
            logits = model(images)
        loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()
        return loss, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state, batch):
        images = spec.normalize(batch['image'])  # (b, h, w, c), or clips (b, t, h, w, c) as pretraining's
        step, params = state['step'], state['params']
        mix_key, drop_key = jax.random.split(jax.random.fold_in(state['rng'], step))
        targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], num_classes), config.classifier.label_smoothing)
        if mode == 'finetune':
            images, targets = mix(mix_key, images, targets, config.mixup)
        trainable, frozen = partition(params, mode, head)
        batch_stats = state.get('batch_stats', {})
        if accum == 1:
            (loss, batch_stats), grads = grad_fn(trainable, frozen, batch_stats, images, targets, drop_key)
        else:

            def accumulate(carry, inputs):
                total_loss, total_grads, stats, index = carry
                (loss, stats), grads = grad_fn(trainable, frozen, stats, *inputs, jax.random.fold_in(drop_key, index))
                return (total_loss + loss, jax.tree.map(jnp.add, total_grads, grads), stats, index + 1), None

            zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, trainable), batch_stats, 0)
            (loss, grads, batch_stats, _), _ = jax.lax.scan(
                accumulate, zeros, (micro_batches(images, accum, mesh), micro_batches(targets, accum, mesh))
            )
            loss, grads = jax.tree.map(lambda x: x / accum, (loss, grads))
        updates, opt_state = tx.update(grads, state['opt_state'], trainable)
        new_state = dict(
            step=step + 1,
            params=combine(optax.apply_updates(trainable, updates), frozen),
            opt_state=opt_state,
            rng=state['rng'],
        )
        if 'batch_stats' in state:
            new_state['batch_stats'] = batch_stats
        metrics = dict(loss=loss, grad_norm=optax.tree.norm(grads), lr=schedule(step))
        return new_state, metrics

    return train_step


def make_eval_step(spec, graphdef, rest):
    def eval_step(params, batch_stats, batch):
        model = nnx.merge(graphdef, params, *([batch_stats] if batch_stats else []), traced(rest))
        model.eval()
        logits = model(spec.normalize(batch['image'])).astype(jnp.float32)
        labels, valid = batch['label'], batch['valid'].astype(jnp.float32)
        top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
        return dict(
            correct=((logits.argmax(-1) == labels) * valid).sum(),
            correct5=((top5 == labels[:, None]).any(-1) * valid).sum(),
            loss=(optax.softmax_cross_entropy_with_integer_labels(logits, labels) * valid).sum(),
            count=valid.sum(),
        )

    return eval_step


def classify_program(config, spec, num_classes, mesh):
    """The classifier's StepProgram: its optimizer over the trainable parameters, state shardings, model parts
    (batch statistics beside the parameters) and the jitted, donated step."""
    build = functools.partial(build_classifier, config, spec, num_classes)
    abstract_model = nnx.eval_shape(build)
    family = families.get(spec.family)
    trainable = partition(nnx.to_pure_dict(nnx.state(abstract_model, nnx.Param)), config.mode, family.head)[0]
    tx, schedule = optim.make_classifier_optimizer(config, trainable, family, family.depth(abstract_model))
    init = functools.partial(init_state, config, spec, num_classes, tx)
    abstract_state = jax.eval_shape(init)
    shardings = sharding.state_shardings(abstract_state, mesh, fsdp_min_size(config))
    # the rng streams in `rest` are reseeded every step (drop path)
    graphdef, rest = model_parts(config, mesh, build, (nnx.Param, nnx.BatchStat))
    batch_shardings = {'image': sharding.batch_sharding(mesh), 'label': sharding.batch_sharding(mesh)}
    train_step = jax.jit(
        make_train_step(config, spec, graphdef, rest, tx, schedule, mesh, num_classes),
        in_shardings=(shardings, batch_shardings),
        out_shardings=(shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    return StepProgram(tx, schedule, init, abstract_state, shardings, graphdef, rest, train_step)

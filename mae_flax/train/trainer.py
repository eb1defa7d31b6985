"""MAE pretraining, top to bottom: mesh, data, abstract state, sharded init (or restore), jitted step with donated
state, the loop with checkpoints, metrics and reconstruction grids.

The same code runs on one CPU and on a TPU pod: every array is a global jax.Array over one (data, fsdp) mesh,
each process feeds only its rows of the batch, and only process 0 writes logs and images.
"""

import functools
import json
import logging
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from einops import rearrange
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from mae_flax.convert import load_state_dict_file, load_torch_state_dict, unwrap_state_dict
from mae_flax.files import atomic_path
from mae_flax.mae import MAE
from mae_flax.patchify import pair
from mae_flax.train import checkpoint, data, optim, report, sharding
from mae_flax.vit import ViT

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_model(config, rngs):
    encoder = ViT(**config.model, dtype=jnp.dtype(config.dtype), rngs=rngs)
    return MAE(encoder=encoder, **config.mae, rngs=rngs)


def pixel_stats(channels):
    """The per-channel mean and std images are normalised with: ImageNet's for RGB, their average otherwise."""
    if channels == 3:
        return np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    return np.full(channels, np.mean(IMAGENET_MEAN), np.float32), np.full(channels, np.mean(IMAGENET_STD), np.float32)


def normalize(images, mean, std):
    """uint8 (b, h, w, c) -> float32, standardised per channel."""
    return (images.astype(jnp.float32) / 255 - mean) / std


def init_state(config, tx):
    model = build_model(config, nnx.Rngs(config.seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return dict(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(config.seed + 1),  # the masking noise of step s is drawn from fold_in(rng, s)
    )


def model_parts(config):
    """(graphdef, rest): what nnx.merge needs besides the parameters. `rest` is the model's (unused) RNG state,
    built by a jit whose parameter initialisation XLA drops."""
    abstract_model = nnx.eval_shape(lambda: build_model(config, nnx.Rngs(config.seed)))
    graphdef = nnx.split(abstract_model, nnx.Param, ...)[0]
    rest = jax.jit(lambda: nnx.split(build_model(config, nnx.Rngs(config.seed)), nnx.Param, ...)[2])()
    return graphdef, rest


def with_shardings(abstract_state, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings)


def host(tree):
    """Fully replicated global arrays -> numpy, on any process."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def make_train_step(config, graphdef, rest, tx, schedule, mesh, num_patches):
    mean, std = pixel_stats(config.model.channels)
    accum = config.grad_accum_steps

    def loss_fn(params, images, noise):
        return nnx.merge(graphdef, params, rest)(images, noise=noise)

    grad_fn = jax.value_and_grad(loss_fn)

    def micro_batches(x):
        # row b * accum + k goes to micro-batch k, so every device keeps its own rows
        x = rearrange(x, '(b k) ... -> k b ...', k=accum)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, sharding.BATCH_AXES)))

    def train_step(state, batch):
        images = normalize(batch, mean, std)  # (b, h, w, c)
        step, params = state['step'], state['params']
        noise = jax.random.uniform(jax.random.fold_in(state['rng'], step), (images.shape[0], num_patches))
        if accum == 1:
            loss, grads = grad_fn(params, images, noise)
        else:

            def accumulate(total, inputs):
                return jax.tree.map(jnp.add, total, grad_fn(params, *inputs)), None

            zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
            (loss, grads), _ = jax.lax.scan(accumulate, zeros, (micro_batches(images), micro_batches(noise)))
            loss, grads = jax.tree.map(lambda x: x / accum, (loss, grads))
        updates, opt_state = tx.update(grads, state['opt_state'], params)
        new_state = dict(step=step + 1, params=optax.apply_updates(params, updates), opt_state=opt_state)
        metrics = dict(loss=loss, grad_norm=optax.tree.norm(grads), lr=schedule(step))
        return new_state | dict(rng=state['rng']), metrics

    return train_step


def make_eval_step(config, graphdef, rest):
    mean, std = pixel_stats(config.model.channels)

    def eval_step(params, batch, noise):
        out = nnx.merge(graphdef, params, rest)(normalize(batch, mean, std), noise=noise, return_outputs=True)
        return out.loss, out.pred_pixel_values, out.masked_indices

    return eval_step


def init_from_torch(path, params, graphdef, rest, shardings):
    """Parameters from a vit-pytorch / mae_torch state dict: a full MAE, or a ViT for the encoder alone (the
    decoder keeps its fresh initialisation; a classifier head, which MAE does not use, is dropped)."""
    state_dict = unwrap_state_dict(load_state_dict_file(path), path)
    model = nnx.merge(graphdef, multihost_utils.process_allgather(params, tiled=True), rest)
    if any(key.startswith('encoder.') for key in state_dict):
        load_torch_state_dict(model, state_dict)
    else:
        if model.encoder.mlp_head is None:
            state_dict = {key: value for key, value in state_dict.items() if not key.startswith('mlp_head.')}
        load_torch_state_dict(model.encoder, state_dict)
    logging.info('initialised from torch weights %s', path)
    loaded = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return jax.tree.map(lambda value, s: sharding.put_global(value, s), loaded, shardings)


def check_batch(config, mesh):
    batch_devices = mesh.shape['data'] * mesh.shape['fsdp']
    unit = config.grad_accum_steps * batch_devices
    if config.batch_size % unit or config.batch_size % jax.process_count():
        raise ValueError(
            f'batch_size {config.batch_size} must be divisible by grad_accum_steps {config.grad_accum_steps} x '
            f'{batch_devices} batch devices (mesh data x fsdp) = {unit}, and by {jax.process_count()} processes'
        )


def train(config, workdir, *, init_from=None):
    """Trains (or resumes) in `workdir`; returns a summary dict. Raises FloatingPointError on a NaN/Inf loss."""
    workdir = Path(workdir).absolute()
    process_index, process_count = jax.process_index(), jax.process_count()
    is_main = process_index == 0
    image_size = pair(config.model.image_size)
    patch_size = pair(config.model.patch_size)
    num_patches = (image_size[0] // patch_size[0]) * (image_size[1] // patch_size[1])

    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    check_batch(config, mesh)
    logging.info('mesh %s over %d processes', dict(mesh.shape), process_count)

    # data first: a missing or empty source fails before anything compiles
    source = data.make_source(config.data.source, image_size, config.model.channels)
    train_iter = data.train_iterator(
        source, config.data, image_size, config.seed, config.batch_size, process_index, process_count
    )
    eval_batch = None  # num_eval_images=0: no reconstruction grids, no eval loss
    if config.num_eval_images:
        eval_batch = data.eval_images(source, config.data, image_size, config.seed + 1, config.num_eval_images)

    tx, schedule = optim.make_optimizer(config.optim, config.batch_size, config.total_steps)
    init = functools.partial(init_state, config, tx)
    abstract_state = jax.eval_shape(init)
    shardings = sharding.state_shardings(abstract_state, mesh)
    graphdef, rest = model_parts(config)

    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        with atomic_path(workdir / 'config.json') as tmp:
            tmp.write_text(config.to_json_best_effort(indent=2))
    manager = checkpoint.make_manager(workdir / 'checkpoints', config.checkpoint)
    if manager.latest_step() is not None:
        if init_from:
            logging.warning('%s has a checkpoint: resuming from it, not from --init_from=%s', workdir, init_from)
        state = checkpoint.restore(manager, with_shardings(abstract_state, shardings), train_iter)
    else:
        state = jax.jit(init, out_shardings=shardings)()
        if init_from:
            state['params'] = init_from_torch(init_from, state['params'], graphdef, rest, shardings['params'])
    num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_state['params']))
    logging.info('%.2fM parameters, %s compute', num_params / 1e6, config.dtype)

    train_step = jax.jit(
        make_train_step(config, graphdef, rest, tx, schedule, mesh, num_patches),
        in_shardings=(shardings, sharding.batch_sharding(mesh)),
        out_shardings=(shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    eval_step = jax.jit(
        make_eval_step(config, graphdef, rest),
        in_shardings=(shardings['params'], sharding.replicated(mesh), sharding.replicated(mesh)),
        out_shardings=sharding.replicated(mesh),
    )
    mean, std = pixel_stats(config.model.channels)

    def evaluate(step):
        """The loss on the fixed eval batch and mask; process 0 draws its reconstructions."""
        if eval_batch is None:
            return None
        noise = jax.random.uniform(jax.random.PRNGKey(config.seed + 2), (len(eval_batch), num_patches))
        eval_inputs = (sharding.put_global(eval_batch, sharding.replicated(mesh)), noise)
        loss, pred, masked_indices = host(eval_step(state['params'], *eval_inputs))
        if is_main:
            report.save_reconstructions(
                workdir / 'images' / f'step_{step:06d}.png',
                (eval_batch / 255 - mean) / std,
                pred,
                masked_indices,
                patch_size,
                config.mae.norm_pix_loss,
                mean,
                std,
            )
        return float(loss)

    start = int(host(state['step']))
    writer = report.MetricsWriter(workdir) if is_main else None
    preemption = checkpoint.Preemption(manager, process_count)
    progress = tqdm(total=config.total_steps, initial=start, unit='step', disable=not is_main, dynamic_ncols=True)
    if start == 0:
        initial_eval_loss = evaluate(0)
        if writer and initial_eval_loss is not None:
            writer.write(0, dict(eval_loss=initial_eval_loss))
    first_loss = last_loss = None
    window_start, window_steps, steady_start = time.perf_counter(), 0, None
    try:
        for step in range(start, config.total_steps):
            batch = sharding.global_batch(next(train_iter), mesh)
            state, metrics = train_step(state, batch)
            metrics = {name: float(value) for name, value in host(metrics).items()}
            done = step + 1
            if not math.isfinite(metrics['loss']):
                manager.wait_until_finished()
                raise FloatingPointError(
                    f'loss is {metrics["loss"]} at step {done}: stopping; the last good checkpoint '
                    f'(step {manager.latest_step()}) is kept in {manager.directory}'
                )
            first_loss = metrics['loss'] if first_loss is None else first_loss
            last_loss = metrics['loss']
            steady_start = steady_start or time.perf_counter()  # after the first step, which compiles
            window_steps += 1
            progress.update(1)
            progress.set_postfix(loss=f'{last_loss:.4f}', refresh=False)

            if done % config.log_every == 0 or done == config.total_steps:
                elapsed = time.perf_counter() - window_start
                metrics['images_per_sec'] = window_steps * config.batch_size / elapsed
                window_start, window_steps = time.perf_counter(), 0
                if (done % config.image_every == 0 or done == config.total_steps) and eval_batch is not None:
                    metrics['eval_loss'] = evaluate(done)
                if writer:
                    writer.write(done, metrics)
                progress.set_postfix(loss=f'{last_loss:.4f}', img_s=f'{metrics["images_per_sec"]:.0f}')
            elif done % config.image_every == 0:
                evaluate(done)

            preempted = preemption.reached(done)
            checkpoint.save(manager, done, state, train_iter, force=preempted or done == config.total_steps)
            if preempted:
                logging.warning('preempted: checkpoint at step %d saved; rerun the same command to resume', done)
                break
        manager.wait_until_finished()
    finally:
        progress.close()
        preemption.close()
        if writer:
            writer.close()

    done = int(host(state['step']))
    seconds = time.perf_counter() - steady_start if steady_start else 0.0
    steps_run = done - start
    images_per_sec = (steps_run - 1) * config.batch_size / seconds if steps_run > 1 and seconds > 0 else 0.0
    records = report.read_metrics(workdir / 'metrics.jsonl') if is_main else {}
    if records:
        report.save_loss_curve(records, workdir / 'loss_curve.png')
    eval_losses = [r['eval_loss'] for r in records.values() if 'eval_loss' in r]
    summary = dict(
        step=done,
        steps_run=steps_run,
        first_loss=first_loss,
        last_loss=last_loss,
        first_eval_loss=eval_losses[0] if eval_losses else None,
        last_eval_loss=eval_losses[-1] if eval_losses else None,
        images_per_sec=images_per_sec,
        skipped_images=len(getattr(source, 'skipped', ())),
    )
    if is_main:
        print(summary_line(summary, workdir), flush=True)
    return summary


def summary_line(summary, workdir):
    if not summary['steps_run']:
        return f'nothing to do: {workdir} is already at step {summary["step"]}'
    line = (
        f'done: step {summary["step"]} ({summary["steps_run"]} this run), '
        f'loss {summary["first_loss"]:.4f} -> {summary["last_loss"]:.4f}'
    )
    if summary['first_eval_loss'] is not None:
        line += f', eval loss {summary["first_eval_loss"]:.4f} -> {summary["last_eval_loss"]:.4f}'
    line += f', {summary["images_per_sec"]:.0f} images/s'
    if summary['skipped_images']:
        line += f', {summary["skipped_images"]} unreadable images skipped'
    return line + f'; checkpoints, metrics.jsonl, tensorboard/, images/ and loss_curve.png in {workdir}'


def load_config(workdir):
    """The ConfigDict a run in `workdir` was started with (its config.json)."""
    path = Path(workdir) / 'config.json'
    if not path.is_file():
        raise ValueError(f'{workdir} has no config.json: expected the --workdir of a mae-train run')

    def tuples(value):
        if isinstance(value, dict):
            return {key: tuples(item) for key, item in value.items()}
        return tuple(value) if isinstance(value, list) else value

    return ml_collections.ConfigDict(tuples(json.loads(path.read_text())))

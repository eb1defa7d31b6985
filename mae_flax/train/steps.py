"""MAE pretraining's step functions, module-level functions of (state, batch) built by factories, and the
StepProgram that bundles what a step is made of (optimizer, state shardings, model parts, the jitted step). The
same program that the loop runs is what the benchmarks time and compile for other topologies
(benchmarks/tpu_aot.py); classification builds its own program from the same pieces (train/classify/steps.py)."""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from einops import rearrange
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mae_flax.train import optim, sharding
from mae_flax.train.model_state import build_model, fsdp_min_size, model_parts, model_spec, params_of, with_shardings


class StepProgram(NamedTuple):
    """Everything the training step is made of, built once from the config and the mesh."""

    tx: optax.GradientTransformation
    schedule: Callable
    init: Callable  # () -> the initial state, unsharded
    abstract_state: dict  # ShapeDtypeStructs of the state
    shardings: dict  # NamedShardings of the state
    graphdef: nnx.GraphDef
    rest: nnx.State
    train_step: Callable  # jitted (state, batch) -> (state, metrics); the state is donated

    @classmethod
    def build(cls, config, mesh):
        """MAE pretraining's program (kept as the constructor the benchmarks call)."""
        return pretrain_program(config, mesh)

    def abstract_inputs(self, config, mesh):
        """(state, batch) as ShapeDtypeStructs with their shardings: what `train_step.lower` takes."""
        spec = model_spec(config)
        batch = jax.ShapeDtypeStruct(
            (config.batch_size, *spec.input_shape), jnp.uint8, sharding=sharding.batch_sharding(mesh)
        )
        return with_shardings(self.abstract_state, self.shardings), batch


def micro_batches(x, accum, mesh):
    """(b * accum, ...) -> (accum, b, ...): row b * accum + k goes to micro-batch k, so every device keeps its own
    rows (gradient accumulation)."""
    x = rearrange(x, '(b k) ... -> k b ...', k=accum)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, sharding.BATCH_AXES)))


def init_state(config, tx):
    """A fresh pretraining state: step, parameters, optimizer state, and the rng the masking noise comes from."""
    params = params_of(build_model(config, nnx.Rngs(config.seed)))
    return dict(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(config.seed + 1),  # the masking noise of step s is drawn from fold_in(rng, s)
    )


def make_train_step(config, graphdef, rest, tx, schedule, mesh):
    spec = model_spec(config)
    accum = config.grad_accum_steps

    def loss_fn(params, images, noise):
        return nnx.merge(graphdef, params, rest)(images, noise=noise, return_outputs=True).loss

    grad_fn = jax.value_and_grad(loss_fn)

    def train_step(state, batch):
        images = spec.normalize(batch)  # (b, h, w, c), or clips (b, t, h, w, c)
        step, params = state['step'], state['params']
        noise = jax.random.uniform(jax.random.fold_in(state['rng'], step), (images.shape[0], spec.num_patches))
        if accum == 1:
            loss, grads = grad_fn(params, images, noise)
        else:

            def accumulate(total, inputs):
                return jax.tree.map(jnp.add, total, grad_fn(params, *inputs)), None

            zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
            inputs = (micro_batches(images, accum, mesh), micro_batches(noise, accum, mesh))
            (loss, grads), _ = jax.lax.scan(accumulate, zeros, inputs)
            loss, grads = jax.tree.map(lambda x: x / accum, (loss, grads))
        updates, opt_state = tx.update(grads, state['opt_state'], params)
        new_state = dict(step=step + 1, params=optax.apply_updates(params, updates), opt_state=opt_state)
        metrics = dict(loss=loss, grad_norm=optax.tree.norm(grads), lr=schedule(step))
        return new_state | dict(rng=state['rng']), metrics

    return train_step


def make_eval_step(config, graphdef, rest):
    spec = model_spec(config)

    def eval_step(params, batch, noise):
        out = nnx.merge(graphdef, params, rest)(spec.normalize(batch), noise=noise, return_outputs=True)
        return out.loss, out.pred_pixel_values, out.masked_indices

    return eval_step


def pretrain_program(config, mesh, tables=None):
    """MAE pretraining's program; `tables`: the model's own fixed tables (build_model)."""
    tx, schedule = optim.make_optimizer(config)
    init = functools.partial(init_state, config, tx)
    abstract_state = jax.eval_shape(init)
    shardings = sharding.state_shardings(abstract_state, mesh, fsdp_min_size(config))
    graphdef, rest = model_parts(config, mesh, tables=tables)
    train_step = jax.jit(
        make_train_step(config, graphdef, rest, tx, schedule, mesh),
        in_shardings=(shardings, sharding.batch_sharding(mesh)),
        out_shardings=(shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    return StepProgram(tx, schedule, init, abstract_state, shardings, graphdef, rest, train_step)

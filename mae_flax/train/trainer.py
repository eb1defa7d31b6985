"""MAE pretraining, top to bottom: mesh, data, abstract state, sharded init (or restore), jitted step with donated
state, the loop with checkpoints, metrics and reconstruction grids.

The same code runs on one CPU and on a TPU pod: every array is a global jax.Array over one (data, fsdp) mesh,
each process feeds only its rows of the batch, and only process 0 writes logs and images.
"""

import collections
import functools
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

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

from mae_core.errors import UsageError
from mae_core.spec import ModelSpec
from mae_flax import families, model_files
from mae_flax.convert import load_state_dict_file, load_torch_state_dict, unwrap_state_dict
from mae_flax.files import as_path, atomic_path, is_remote
from mae_flax.stack import Scanned
from mae_flax.train import compilation_cache, config_checks, data, optim, report, sharding, state_checkpoints

CLASSIFIER_HEADS = ('mlp_head.', 'head.', 'fc_norm.', 'classifier.')  # vit-pytorch, timm, HuggingFace


def model_spec(config):
    """The run's model description (config.model) as a mae_core.ModelSpec."""
    return ModelSpec.from_dict(config.model.to_dict())


def build_model(config, rngs):
    return families.build(
        model_spec(config),
        rngs=rngs,
        dtype=jnp.dtype(config.dtype),
        scan_layers=config.get('scan_layers', False),  # runs before this field existed had unscanned blocks
        remat=config.get('remat', 'none'),
    )


def normalize(images, spec):
    """uint8 (b, h, w, c) -> float32, standardised per channel with the model's pixel statistics."""
    mean, std = np.float32(spec.pixel_mean), np.float32(spec.pixel_std)
    return (images.astype(jnp.float32) / 255 - mean) / std


def fsdp_min_size(config):
    """Parameters of fewer elements (per block) stay replicated under FSDP (runs before this field: 0)."""
    return config.mesh.get('fsdp_min_size', 0)


def init_state(config, tx):
    model = build_model(config, nnx.Rngs(config.seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return dict(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(config.seed + 1),  # the masking noise of step s is drawn from fold_in(rng, s)
    )


def model_parts(config, mesh=None, build=None, kinds=(nnx.Param,)):
    """(graphdef, rest): what nnx.merge needs besides the model's state of `kinds` (the parameters; a classifier's
    batch statistics too). `rest` is the model's other state (rng streams), built by a jit whose parameter
    initialisation XLA drops; `build()` makes the model (default: the run's MAE). On a `mesh` with fsdp > 1 the
    scanned blocks gather their weights once per pass (sharding.FsdpGather)."""
    build = build or (lambda: build_model(config, nnx.Rngs(config.seed)))
    abstract_model = nnx.eval_shape(build)
    if mesh is not None and mesh.shape['fsdp'] > 1:
        set_fsdp_gather(abstract_model, config, mesh)
    graphdef = nnx.split(abstract_model, *kinds, ...)[0]
    rest = jax.jit(lambda: nnx.split(build(), *kinds, ...)[-1])()
    return graphdef, rest


def set_fsdp_gather(model, config, mesh):
    """The model's scanned blocks gather their FSDP-sharded weights once per block and pass (sharding.FsdpGather)."""
    gather = sharding.FsdpGather(mesh, fsdp_min_size(config), config.dtype)
    for _, module in model.iter_modules():
        if isinstance(module, Scanned):
            module.gather = gather


def with_shardings(abstract_state, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings)


def host(tree):
    """Fully replicated global arrays -> numpy, on any process."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def make_train_step(config, graphdef, rest, tx, schedule, mesh):
    spec = model_spec(config)
    accum = config.grad_accum_steps

    def loss_fn(params, images, noise):
        return nnx.merge(graphdef, params, rest)(images, noise=noise, return_outputs=True).loss

    grad_fn = jax.value_and_grad(loss_fn)

    def micro_batches(x):
        # row b * accum + k goes to micro-batch k, so every device keeps its own rows
        x = rearrange(x, '(b k) ... -> k b ...', k=accum)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, sharding.BATCH_AXES)))

    def train_step(state, batch):
        images = normalize(batch, spec)  # (b, h, w, c)
        step, params = state['step'], state['params']
        noise = jax.random.uniform(jax.random.fold_in(state['rng'], step), (images.shape[0], spec.num_patches))
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


class StepProgram(NamedTuple):
    """Everything the training step is made of, built once from the config and the mesh; the same program that
    `train` runs is what the benchmarks time and compile for other topologies (benchmarks/tpu_aot.py)."""

    tx: optax.GradientTransformation
    schedule: Callable
    init: Callable  # () -> the initial state, unsharded
    abstract_state: dict  # ShapeDtypeStructs of the state
    shardings: dict  # NamedShardings of the state
    graphdef: nnx.GraphDef
    rest: nnx.State
    train_step: Callable  # jitted (state, uint8 batch (b, h, w, c)) -> (state, metrics); the state is donated

    @classmethod
    def build(cls, config, mesh):
        tx, schedule = optim.make_optimizer(config)
        init = functools.partial(init_state, config, tx)
        abstract_state = jax.eval_shape(init)
        shardings = sharding.state_shardings(abstract_state, mesh, fsdp_min_size(config))
        graphdef, rest = model_parts(config, mesh)
        train_step = jax.jit(
            make_train_step(config, graphdef, rest, tx, schedule, mesh),
            in_shardings=(shardings, sharding.batch_sharding(mesh)),
            out_shardings=(shardings, sharding.replicated(mesh)),
            donate_argnums=0,
        )
        return cls(tx, schedule, init, abstract_state, shardings, graphdef, rest, train_step)

    def abstract_inputs(self, config, mesh):
        """(state, batch) as ShapeDtypeStructs with their shardings: what `train_step.lower` takes."""
        size, channels = model_spec(config).image_size, model_spec(config).channels
        batch = jax.ShapeDtypeStruct(
            (config.batch_size, *size, channels), jnp.uint8, sharding=sharding.batch_sharding(mesh)
        )
        return with_shardings(self.abstract_state, self.shardings), batch


def fetch_metrics(metrics):
    """A list of steps' metrics (replicated arrays on the device) -> numpy, one wait for all of them."""
    return host(metrics)


def make_eval_step(config, graphdef, rest):
    spec = model_spec(config)

    def eval_step(params, batch, noise):
        out = nnx.merge(graphdef, params, rest)(normalize(batch, spec), noise=noise, return_outputs=True)
        return out.loss, out.pred_pixel_values, out.masked_indices

    return eval_step


def init_from_torch(path, params, graphdef, rest, shardings):
    """Parameters from a torch state dict of the run's family (a file, or a HuggingFace folder): a full MAE, or an
    encoder alone (the decoder keeps its fresh initialisation; a classifier head, which MAE does not use, is
    dropped if the run has none)."""
    try:
        if Path(path).is_dir():  # a HuggingFace folder
            state_dict = model_files.hf_folder_state_dict(path)
        else:
            state_dict = unwrap_state_dict(load_state_dict_file(path), path)
    except (OSError, ValueError, TypeError) as error:
        raise UsageError(f'--init_from {path}: {error}') from error
    model = nnx.merge(graphdef, multihost_utils.process_allgather(params, tiled=True), rest)
    family, kind = families.detect(state_dict, path)
    if family is not families.of(model):
        raise UsageError(f'--init_from {path} is a {family.name} model; this run trains {families.of(model).name}')
    if kind == 'ViT':  # a classifier's head, which MAE does not use, is dropped if the run's model has none
        layout = family.detect(state_dict)[1]
        expected = {key for row in family.table(model, layout, True) for key in row.keys}
        state_dict = {
            key: value for key, value in state_dict.items() if key in expected or not key.startswith(CLASSIFIER_HEADS)
        }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the encoder-alone warning: said below, in the log
            load_torch_state_dict(model, state_dict)
    except ValueError as error:
        raise UsageError(f"--init_from {path} does not fit the run's model: {error}") from error
    logging.info('initialised %s from torch weights %s', 'the MAE' if kind == 'MAE' else 'the encoder', path)
    loaded = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return jax.tree.map(lambda value, s: sharding.put_global(value, s), loaded, shardings)


def check_batch(config, mesh):
    batch_devices = mesh.shape['data'] * mesh.shape['fsdp']
    unit = config.grad_accum_steps * batch_devices
    if config.batch_size % unit or config.batch_size % jax.process_count():
        raise UsageError(
            f'config.batch_size {config.batch_size} must be divisible by grad_accum_steps {config.grad_accum_steps} x '
            f'{batch_devices} batch devices (mesh data x fsdp) = {unit}, and by {jax.process_count()} processes'
        )


def train(config, workdir, *, init_from=None):
    """Trains (or resumes) in `workdir`; returns a summary dict. Raises UsageError for a mistake in the config,
    the workdir or the data, before anything is created or compiled, FloatingPointError on a NaN/Inf loss and
    state_checkpoints.CheckpointError when a checkpoint cannot be written."""
    workdir = workdir_path(workdir)
    spec = config_checks.check(config)
    return run(Pretraining(config, spec, init_from), workdir)


class Pretraining:
    """mae-train's task for the loop (`run`): MAE pretraining on images without labels. Its evaluation is the loss
    on a fixed batch of images and masks, and the reconstruction grids of that batch."""

    command = 'mae-train'

    def __init__(self, config, spec, init_from=None):
        if init_from and not Path(init_from).exists():
            raise UsageError(f'--init_from {init_from}: no such file or folder')
        self.config = ml_collections.ConfigDict(config.to_dict() | {'model': spec.to_dict()})  # defaults filled
        self.spec, self.init_from = spec, init_from
        self.eval_batch = None

    def data(self, process_index, process_count):
        """The training iterator (this process's rows of each batch); a missing or empty source fails here, before
        anything compiles."""
        config, spec = self.config, self.spec
        self.source = data.make_source(config.data.source, spec.image_size, spec.channels)
        if config.num_eval_images:  # 0: no reconstruction grids, no eval loss
            self.eval_batch = data.eval_images(
                self.source, config.data, spec.image_size, config.seed + 1, config.num_eval_images
            )
        return data.train_iterator(
            self.source, config.data, spec.image_size, config.seed, config.batch_size, process_index, process_count
        )

    def program(self, mesh):
        self.mesh = mesh
        self.step_program = StepProgram.build(self.config, mesh)
        self.eval_step = jax.jit(
            make_eval_step(self.config, self.step_program.graphdef, self.step_program.rest),
            in_shardings=(self.step_program.shardings['params'], sharding.replicated(mesh), sharding.replicated(mesh)),
            out_shardings=sharding.replicated(mesh),
        )
        return self.step_program

    def initialize(self, state):
        """A fresh state's parameters from --init_from, if given."""
        if self.init_from:
            program = self.step_program
            state['params'] = init_from_torch(
                self.init_from, state['params'], program.graphdef, program.rest, program.shardings['params']
            )
        return state

    def evaluates(self, step, last):
        return self.eval_batch is not None and (step % self.config.image_every == 0 or last)

    def evaluate(self, state, step, workdir, is_main):
        """{'eval_loss': the loss on the fixed eval batch and mask}; process 0 draws its reconstructions."""
        spec, mesh = self.spec, self.mesh
        noise = jax.random.uniform(jax.random.PRNGKey(self.config.seed + 2), (len(self.eval_batch), spec.num_patches))
        eval_inputs = (sharding.put_global(self.eval_batch, sharding.replicated(mesh)), noise)
        loss, pred, masked_indices = host(self.eval_step(state['params'], *eval_inputs))
        if is_main:
            report.save_reconstructions(
                workdir / 'images' / f'step_{step:06d}.png',
                spec.normalize(self.eval_batch / 255),
                pred,
                masked_indices,
                spec,
            )
        return dict(eval_loss=float(loss))

    def summarize(self, records, workdir, is_main):
        """What the summary adds: the eval losses of the first and last evaluations, skipped images; process 0
        draws the loss curve (`records` are metrics.jsonl's, read by process 0 only)."""
        if records and is_main:
            report.save_loss_curve(records, workdir / 'loss_curve.png')
        eval_losses = [r['eval_loss'] for r in records.values() if 'eval_loss' in r]
        return dict(
            first_eval_loss=eval_losses[0] if eval_losses else None,
            last_eval_loss=eval_losses[-1] if eval_losses else None,
            skipped_images=len(getattr(self.source, 'skipped', ())),
        )

    def summary_line(self, summary, workdir):
        return summary_line(summary, workdir)


def run(task, workdir):
    """The training loop every task shares (mae-train's pretraining, mae-finetune's and mae-linprobe's
    classification): mesh, data, sharded init or restore, the jitted step with donated state, metrics fetched once
    per log window with the NaN check there, evaluations, checkpoints with the data iterator's position, SIGTERM
    and Ctrl-C, the summary. `task` says what is trained (see Pretraining)."""
    config = task.config
    with compilation_cache.enabled(config.compilation_cache, workdir) as cache:
        return _run(task, config, workdir, cache)


def _run(task, config, workdir, cache):
    process_index, process_count = jax.process_index(), jax.process_count()
    is_main = process_index == 0

    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    check_batch(config, mesh)
    logging.info('mesh %s over %d processes', dict(mesh.shape), process_count)

    train_iter = task.data(process_index, process_count)  # data first: a bad source fails before anything compiles
    program = task.program(mesh)
    init, abstract_state, shardings = program.init, program.abstract_state, program.shardings

    check_layout(config, workdir)
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        with atomic_path(workdir / 'config.json') as tmp:
            tmp.write_text(config.to_json_best_effort(indent=2))
    manager = state_checkpoints.make_manager(workdir / 'checkpoints', config.checkpoint)
    if manager.latest_step() is not None:
        if task.init_from:
            logging.warning('%s has a checkpoint: resuming from it, not from --init_from=%s', workdir, task.init_from)
        abstract = with_shardings(abstract_state, shardings)
        state, _ = state_checkpoints.restore(manager, abstract, train_iter, set_aside=True)
    else:
        state = task.initialize(jax.jit(init, out_shardings=shardings)())
    num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_state['params']))
    logging.info('%.2fM parameters, %s compute', num_params / 1e6, config.dtype)

    train_step = program.train_step
    start = int(host(state['step']))
    writer = report.MetricsWriter(workdir) if is_main else None
    preemption = state_checkpoints.Preemption(manager, process_count)
    progress = tqdm(total=config.total_steps, initial=start, unit='step', disable=not is_main, dynamic_ncols=True)
    if start == 0 and task.evaluates(0, last=False):
        initial = task.evaluate(state, 0, workdir, is_main)
        if writer:
            writer.write(0, initial)
    losses = collections.deque(maxlen=config.log_every)  # this run's last logging window
    first_window = []  # and its first
    pending = []  # (step, metrics on the device) not fetched yet: no wait for the device between log steps
    window_start, window_steps, steady_start = time.perf_counter(), 0, None

    def fetch():
        """The pending steps' metrics, in one wait for the device: a FloatingPointError at the first non-finite loss
        (the checkpoints saved so far were fetched and checked before they were written)."""
        if not pending:
            return None
        steps = [step for step, _ in pending]
        records = [{name: float(value) for name, value in m.items()} for m in fetch_metrics([m for _, m in pending])]
        pending.clear()
        for step, record in zip(steps, records, strict=True):
            if not math.isfinite(record['loss']):
                manager.wait_until_finished()
                good = manager.latest_step()
                kept = f'the last good checkpoint (step {good}) is kept in' if good else 'no checkpoint yet in'
                raise FloatingPointError(
                    f'loss is {record["loss"]} at step {step} (first non-finite of steps {steps[0]}-{steps[-1]}, '
                    f'fetched every log_every={config.log_every}): stopping; {kept} {manager.directory}'
                )
            losses.append(record['loss'])
            if len(first_window) < config.log_every:
                first_window.append(record['loss'])
        progress.set_postfix(loss=f'{records[-1]["loss"]:.4f}', refresh=False)
        return records[-1]

    hits_before = compilation_cache.EVENTS['cache_hits']
    try:
        for step in range(start, config.total_steps):
            batch = sharding.global_batch(next(train_iter), mesh)
            call_start = time.perf_counter()
            state, metrics = train_step(state, batch)  # the first call compiles, or loads from the cache
            if step == start:
                compilation_cache.log_first_step(cache, hits_before, time.perf_counter() - call_start)
            done = step + 1
            pending.append((done, metrics))
            steady_start = steady_start or time.perf_counter()  # after the first step, which compiles
            window_steps += 1
            progress.update(1)

            last = done == config.total_steps
            if done % config.log_every == 0 or last:
                metrics = fetch()
                elapsed = time.perf_counter() - window_start
                metrics['images_per_sec'] = window_steps * config.batch_size / elapsed
                window_start, window_steps = time.perf_counter(), 0
                if task.evaluates(done, last):
                    metrics |= task.evaluate(state, done, workdir, is_main)
                if writer:
                    writer.write(done, metrics)
                progress.set_postfix(loss=f'{metrics["loss"]:.4f}', img_s=f'{metrics["images_per_sec"]:.0f}')
            elif task.evaluates(done, last):
                evaluation = task.evaluate(state, done, workdir, is_main)
                if writer:
                    writer.write(done, evaluation)

            preempted = preemption.reached(done)
            state_checkpoints.check(manager)
            force = preempted or last
            if force or manager.should_save(done):
                fetch()  # a non-finite loss stops the run before its state is written
                state_checkpoints.save(manager, done, state, train_iter, force=force)
            if preempted:
                state_checkpoints.finish(manager)
                logging.warning(
                    'stopped by %s: checkpoint at step %d saved; rerun the same command to resume',
                    preemption.received or 'preemption',
                    done,
                )
                break
        state_checkpoints.finish(manager)
    finally:
        progress.close()
        preemption.close()
        train_iter.close()  # stops the data worker processes
        if writer:
            writer.close()

    done = int(host(state['step']))
    seconds = time.perf_counter() - steady_start if steady_start else 0.0
    steps_run = done - start
    images_per_sec = (steps_run - 1) * config.batch_size / seconds if steps_run > 1 and seconds > 0 else 0.0
    records = report.read_metrics(workdir / 'metrics.jsonl') if is_main else {}
    summary = dict(
        step=done,
        steps_run=steps_run,
        # averages over this run's first and last logging windows: single steps are too noisy to compare
        first_loss=float(np.mean(first_window)) if first_window else None,
        last_loss=float(np.mean(losses)) if losses else None,
        window=config.log_every,
        images_per_sec=images_per_sec,
        stopped_by=preemption.received,  # 'SIGTERM' or 'SIGINT' when a signal stopped the run early
    )
    summary |= task.summarize(records, workdir, is_main)
    if is_main:
        nothing = f'nothing to do: {workdir} is already at step {summary["step"]}'
        print(task.summary_line(summary, workdir) if steps_run else nothing, flush=True)
    return summary


def losses_line(summary):
    """The start of every task's summary line: the steps, and the mean loss of the first and last log windows."""
    return (
        f'done: step {summary["step"]} ({summary["steps_run"]} this run), '
        f'mean loss of the first / last {summary["window"]} steps {summary["first_loss"]:.4f} -> {summary["last_loss"]:.4f}'
    )


def summary_line(summary, workdir):
    line = losses_line(summary)
    if summary['first_eval_loss'] is not None:
        line += (
            f', eval loss (fixed images and masks) {summary["first_eval_loss"]:.4f} -> {summary["last_eval_loss"]:.4f}'
        )
    line += f', {summary["images_per_sec"]:.0f} images/s'
    if summary['skipped_images']:
        line += f', {summary["skipped_images"]} unreadable images skipped'
    return line + (
        f'; in {workdir}: checkpoints, metrics.jsonl, tensorboard/, loss_curve.png and images/ (each row: original | '
        'masked | reconstruction of the masked patches | the same with the visible patches pasted back)'
    )


def workdir_path(workdir):
    """mae-train's workdir: an absolute local path, or an etils.epath.Path for a URL (gs://bucket/run: checkpoints
    by orbax and tensorstore, metrics, images and the config through epath, which needs gcsfs for gs://)."""
    path = as_path(workdir)
    if is_remote(path):
        try:
            path.exists()
        except ImportError as error:  # fsspec: "Please install gcsfs to access Google Storage"
            extra = " (the [gcs] extra: pip install 'twin-mae[gcs]')" if str(path).startswith('gs://') else ''
            raise UsageError(f'--workdir {workdir}: {error}{extra}') from error
    elif path.exists() and not path.is_dir():
        raise UsageError(f'--workdir {workdir} is a file, not a folder')
    return path


def local_workdir(workdir):
    """The workdir as an absolute local path, for the commands not tested with remote workdirs (mae-finetune,
    mae-linprobe): a URL is refused (Path would turn gs://bucket/x into ./gs:/bucket/x, silently)."""
    if is_remote(workdir):
        raise UsageError(
            f'--workdir {workdir}: only mae-train writes to remote paths; use a path every host sees (NFS, Filestore, '
            'a gcsfuse mount)'
        )
    return workdir_path(workdir)


def check_layout(config, workdir):
    """A run resumes with the parameter layout it was started with: scanned blocks stack their parameters, so a
    checkpoint of one layout does not restore into the other (runs from before `scan_layers` were unscanned)."""
    if not (workdir / 'config.json').is_file() or not (workdir / 'checkpoints').is_dir():
        return
    started = load_config(workdir).get('scan_layers', False)
    if started != config.scan_layers and any(path.name.isdigit() for path in (workdir / 'checkpoints').iterdir()):
        raise UsageError(
            f'{workdir} was trained with scan_layers={started}: resume it with --config.scan_layers={started} '
            '(the layout of its checkpoints), or start a new --workdir'
        )


def load_config(workdir):
    """The ConfigDict a run in `workdir` was started with (its config.json)."""
    path = workdir_path(workdir) / 'config.json'
    if not path.is_file():
        raise UsageError(f'{workdir} has no config.json: expected the --workdir of a mae-train run')

    def tuples(value):
        if isinstance(value, dict):
            return {key: tuples(item) for key, item in value.items()}
        return tuple(value) if isinstance(value, list) else value

    return ml_collections.ConfigDict(tuples(json.loads(path.read_text())))


def restore_model(workdir, step=None):
    """(mae_flax model with a checkpoint's parameters on the default device, its step, the run's config)."""
    config = load_config(workdir)
    tx, _ = optim.make_optimizer(config)
    abstract_state = jax.eval_shape(functools.partial(init_state, config, tx))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract_state = with_shardings(abstract_state, jax.tree.map(lambda _: device, abstract_state))
    manager = state_checkpoints.make_manager(workdir_path(workdir) / 'checkpoints', config.checkpoint)
    if not manager.all_steps():
        raise UsageError(f'no checkpoint in {workdir}/checkpoints: the run has not saved one yet')
    if step is not None and step not in manager.all_steps():
        raise UsageError(f'{workdir} has no checkpoint at step {step}: it has {sorted(manager.all_steps())}')
    state, step = state_checkpoints.restore(manager, abstract_state, step=step)
    graphdef, rest = model_parts(config)
    return nnx.merge(graphdef, state['params'], rest), step, config

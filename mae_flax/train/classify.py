"""Fine-tuning and linear probing of an MAE encoder (mae-finetune, mae-linprobe): facebookresearch/mae's
main_finetune.py and main_linprobe.py recipes, on mae-train's loop (trainer.run: mesh, sharding, grain, orbax,
resume, SIGTERM, metrics), in Flax, for both model families.

- The classifier is the family's (`Family.build_classifier`): the official family's VisionTransformer (timm's keys;
  pool 'avg' = fc_norm of the mean patch token, fine-tuning's default, or 'token' = the cls token after norm,
  linear probing's), or vit-pytorch's own ViT with its mlp_head. The head starts at zero.
- Its encoder comes from `--init_from` (a mae-train workdir or any checkpoint mae-convert reads: published
  facebookresearch/mae and HuggingFace weights included), or is randomly initialised without it (the baseline).
- finetune: AdamW, weight decay on weight matrices only, layer-wise lr decay (`optim.layer_decay`: block i of L gets
  decay ** (L + 1 - (i + 1)), the embeddings decay ** (L + 1), the head 1), drop path, label smoothing, mixup /
  cutmix (timm's batch mode), warmup then cosine; the head starts at zero.
- linprobe: the encoder frozen (its parameters are not differentiated, get no update and no optimizer state), a
  BatchNorm without affine parameters before the head, LARS (optax.lars), a large batch; the head starts from a
  normal of std 0.01 (main_linprobe.py's): LARS scales each update by the weight's norm, so a zero head would never
  move (its norm after one step is lr x |g|, and every later step adds 0.001 of it).
- Evaluation on the whole validation split every `eval_every` steps: top-1, top-5, loss; the best top-1's
  classifier is exported at once to torch (`best.safetensors`, timm's VisionTransformer keys or vit-pytorch's ViT
  keys, the linear probe's BatchNorm folded into the head), with `best.safetensors.json` saying what it is.
"""

import functools
import json
import logging
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from einops import rearrange
from flax import nnx, traverse_util
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mae_core.errors import UsageError
from mae_core.spec import ModelSpec
from mae_flax import families, model_files, stack
from mae_flax.convert import load_torch_state_dict, save_state_dict_file, to_torch_state_dict
from mae_flax.files import atomic_path
from mae_flax.train import config_checks, labeled, optim, report, sharding, trainer

MODES = ('finetune', 'linprobe')
COMMANDS = {'finetune': 'mae-finetune', 'linprobe': 'mae-linprobe'}
BEST = 'best.safetensors'  # in the workdir: the best classifier so far, torch layout; its description in BEST.json


# --- the model ---------------------------------------------------------------------------------------------------


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


def build_classifier(config, spec, rngs, num_classes):
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
        rngs=rngs,
    )


def classifier_rngs(config):
    return nnx.Rngs(config.seed, dropout=config.seed + 3)


def depth_of(model):
    blocks = model.blocks if hasattr(model, 'blocks') else model.transformer.layers
    return len(blocks)


def names_of(path):
    return tuple(str(getattr(key, 'key', key)) for key in path)


# --- the optimizer -----------------------------------------------------------------------------------------------


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


def decays(path):
    """Weight decay on weight matrices only: not on biases, norms, the cls token and position embeddings
    (facebookresearch/mae's fine-tuning: ndim 1 and its no_weight_decay list)."""
    return names_of(path)[-1] == 'kernel'


def make_optimizer(config, trainable, family, depth):
    """(optax transformation, lr schedule) for the trainable parameters."""
    optim_config = config.optim
    schedule = optim.learning_rate_schedule(optim_config, config.batch_size, config.total_steps)
    mask = functools.partial(optim.weight_decay_mask, decays=decays)
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


# --- mixup and cutmix (timm's Mixup, batch mode) -----------------------------------------------------------------


def mix(key, images, targets, mixup_config):
    """timm's Mixup in 'batch' mode: one lam for the batch, drawn from Beta(alpha, alpha); with probability
    `switch_prob` (when both are on) a cutmix box instead of a blend, lam then being the area left; each image is
    mixed with the batch's reverse, its target likewise. Applied with probability `prob`."""
    mixup_alpha, cutmix_alpha = mixup_config.mixup_alpha, mixup_config.cutmix_alpha
    if mixup_alpha <= 0 and cutmix_alpha <= 0 or mixup_config.prob <= 0:
        return images, targets
    apply_key, switch_key, lam_key, box_key = jax.random.split(key, 4)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = jax.random.bernoulli(switch_key, mixup_config.switch_prob)
    else:
        use_cutmix = jnp.asarray(cutmix_alpha > 0)
    alpha = jnp.where(use_cutmix, max(cutmix_alpha, 1e-6), max(mixup_alpha, 1e-6))
    lam = jax.random.beta(lam_key, alpha, alpha)
    applied = jax.random.bernoulli(apply_key, mixup_config.prob)
    height, width = images.shape[1:3]
    # timm's rand_bbox: a box of sides (h, w) * sqrt(1 - lam) centred anywhere, clipped to the image
    cut = jnp.sqrt(1 - lam)
    cut_h, cut_w = jnp.floor(height * cut).astype(jnp.int32), jnp.floor(width * cut).astype(jnp.int32)
    cy, cx = jax.random.randint(box_key, (2,), 0, jnp.array([height, width]))
    top, bottom = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    left, right = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)  # (h, w)
    box_lam = 1 - ((bottom - top) * (right - left)) / (height * width)
    reverse = images[::-1]
    cutmixed = jnp.where(box[None, :, :, None], reverse, images)
    blended = images * lam.astype(images.dtype) + reverse * (1 - lam).astype(images.dtype)
    lam = jnp.where(applied, jnp.where(use_cutmix, box_lam, lam), 1.0).astype(jnp.float32)
    images = jnp.where(applied, jnp.where(use_cutmix, cutmixed, blended), images)
    return images, targets * lam + targets[::-1] * (1 - lam)


# --- the step ----------------------------------------------------------------------------------------------------


def init_state(config, spec, num_classes, tx):
    model = build_classifier(config, spec, classifier_rngs(config), num_classes)
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

    def micro_batches(x):
        x = rearrange(x, '(b k) ... -> k b ...', k=accum)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, sharding.BATCH_AXES)))

    def train_step(state, batch):
        images = trainer.normalize(batch['image'], spec)
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
                accumulate, zeros, (micro_batches(images), micro_batches(targets))
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
        logits = model(trainer.normalize(batch['image'], spec)).astype(jnp.float32)
        labels, valid = batch['label'], batch['valid'].astype(jnp.float32)
        top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
        return dict(
            correct=((logits.argmax(-1) == labels) * valid).sum(),
            correct5=((top5 == labels[:, None]).any(-1) * valid).sum(),
            loss=(optax.softmax_cross_entropy_with_integer_labels(logits, labels) * valid).sum(),
            count=valid.sum(),
        )

    return eval_step


class ClassifyProgram(trainer.StepProgram):
    @classmethod
    def build_for(cls, config, spec, num_classes, mesh):
        abstract_model = nnx.eval_shape(lambda: build_classifier(config, spec, classifier_rngs(config), num_classes))
        abstract_params = nnx.to_pure_dict(nnx.state(abstract_model, nnx.Param))
        family = families.get(spec.family)
        tx, schedule = make_optimizer(
            config, partition(abstract_params, config.mode, family.head)[0], family, depth_of(abstract_model)
        )
        init = functools.partial(init_state, config, spec, num_classes, tx)
        abstract_state = jax.eval_shape(init)
        shardings = sharding.state_shardings(abstract_state, mesh, trainer.fsdp_min_size(config))
        # the rng streams in `rest` are reseeded every step (drop path)
        graphdef, rest = trainer.model_parts(
            config,
            mesh,
            lambda: build_classifier(config, spec, classifier_rngs(config), num_classes),
            (nnx.Param, nnx.BatchStat),
        )
        batch_shardings = {'image': sharding.batch_sharding(mesh), 'label': sharding.batch_sharding(mesh)}
        train_step = jax.jit(
            make_train_step(config, spec, graphdef, rest, tx, schedule, mesh, num_classes),
            in_shardings=(shardings, batch_shardings),
            out_shardings=(shardings, sharding.replicated(mesh)),
            donate_argnums=0,
        )
        return cls(tx, schedule, init, abstract_state, shardings, graphdef, rest, train_step)


# --- export ------------------------------------------------------------------------------------------------------


def torch_state_dict(model):
    """The classifier's torch state dict (timm's VisionTransformer keys, or vit-pytorch's ViT keys): the linear
    probe's BatchNorm, an affine map in evaluation, folded into the head (in float64), so that timm's and
    vit-pytorch's own classes load it with strict=True."""
    family = families.of(model)
    state_dict = to_torch_state_dict(model)
    if getattr(model, 'head_norm', None) is not None:
        norm = model.head_norm
        mean, var = np.asarray(norm.mean[...], np.float64), np.asarray(norm.var[...], np.float64)
        inv = 1 / np.sqrt(var + norm.epsilon)
        weight = state_dict[f'{family.head}.weight'].astype(np.float64)  # (classes, dim)
        bias = state_dict[f'{family.head}.bias'].astype(np.float64)
        state_dict[f'{family.head}.weight'] = (weight * inv).astype(np.float32)
        state_dict[f'{family.head}.bias'] = (bias - weight @ (mean * inv)).astype(np.float32)
    return state_dict


def description(config, spec, classes, pool, **extra):
    """What best.safetensors.json says: how to rebuild the classifier in torch, and what it was trained on."""
    return dict(
        classifier=dict(family=spec.family, num_classes=len(classes), pool=pool, classes=list(classes)),
        model=spec.to_dict(),
        mode=config.mode,
        **extra,
    )


def torch_classifier(path):
    """The mae_torch classifier of an exported `best.safetensors` (its description beside it), in eval mode."""
    import safetensors.torch

    path = Path(path)
    described = json.loads(model_files.spec_path(path).read_text())
    spec, head = ModelSpec.from_dict(described['model']), described['classifier']
    model = families.get(spec.family).build_classifier_torch(spec, num_classes=head['num_classes'], pool=head['pool'])
    model.load_state_dict(safetensors.torch.load_file(path), strict=True)
    return model.eval()


# --- the task ----------------------------------------------------------------------------------------------------


HEAD_FIELDS = ('num_heads', 'decoder_num_heads', 'heads', 'dim_head', 'decoder_heads', 'decoder_dim_head')


def encoder_weights(init_from, config):
    """(spec, torch-layout arrays of the encoder) of a mae-train workdir or any checkpoint mae-convert reads. A bare
    file that does not say its head counts (facebookresearch/mae's .pth files) takes them from config.model, as
    mae-convert takes them from flags (the ImageNet variants carry facebookresearch/mae's)."""
    workdir_config = Path(init_from) / 'config.json'
    mode = json.loads(workdir_config.read_text()).get('mode') if workdir_config.is_file() else None
    if mode:
        raise UsageError(
            f'--init_from {init_from} is a {mode} run, not a pretraining one: its classifier is {Path(init_from) / BEST}'
        )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', 'loaded the encoder alone')  # the classifier has no decoder
            loaded = model_files.read_model(init_from)
    except UsageError as error:
        if 'cannot tell' not in str(error):
            raise
        model = config.model.to_dict()
        heads = {
            field: value
            for part in (model['encoder'], model.get('mae') or {})
            for field, value in part.items()
            if field in HEAD_FIELDS
        }
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings('ignore', 'loaded the encoder alone')
                loaded = model_files.read_model(init_from, heads)
        except UsageError as again:
            raise UsageError(f'{error}; with the head counts of config.model ({heads}): {again}') from again
        logging.info('%s does not say its head counts: %s, from config.model', init_from, heads)
    family = families.get(loaded.spec.family)
    if family.is_mae(loaded.model):
        arrays = to_torch_state_dict(loaded.model, encoder_only=True)
    else:
        arrays = dict(loaded.torch_arrays)
    return loaded.spec, arrays


def load_encoder(classifier, arrays, name):
    """The encoder's weights into the classifier; its head (and fine-tuning's fc_norm) keep their initialisation."""
    family = families.of(classifier)
    own = to_torch_state_dict(classifier)
    missing = [key for key in own if key not in arrays and not key.startswith(family.fresh)]
    if missing:
        raise UsageError(
            f'--init_from {name} holds no encoder weights for {missing[0]!r} ({len(missing)} missing): expected an MAE '
            f'or ViT of the {family.name} family'
        )
    merged = {key: own[key] if key.startswith(family.fresh) else arrays[key] for key in own}
    try:
        load_torch_state_dict(classifier, merged)
    except ValueError as error:
        raise UsageError(f'--init_from {name} does not fit the classifier: {model_files.one_line(error)}') from error


class Classification:
    """mae-finetune's and mae-linprobe's task for trainer.run."""

    def __init__(self, config, workdir, init_from=None):
        self.command = COMMANDS.get(config.get('mode'), 'mae-finetune')
        config_checks.check_classify(config)
        resumed = (workdir / 'config.json').is_file() and (workdir / 'checkpoints').is_dir()
        self.arrays = None
        if resumed and any(path.name.isdigit() for path in (workdir / 'checkpoints').iterdir()):
            spec = ModelSpec.from_dict(trainer.load_config(workdir).model.to_dict())
        elif init_from:
            if not Path(init_from).exists():
                raise UsageError(f'--init_from {init_from}: no such file or folder')
            spec, self.arrays = encoder_weights(init_from, config)
        else:
            spec = config_checks.check_model(config)
        size = config.classifier.image_size
        if size and spec.image_size != (size, size):  # fine-tuning at another resolution: positions resampled
            spec = spec.with_fields('encoder', **{spec.facts.IMAGE_SIZE: size})
        self.spec, self.init_from = spec, init_from
        self.config = ml_collections.ConfigDict(config.to_dict() | {'model': spec.to_dict()})
        self.best = None  # (top-1, step) of the best evaluation so far

    def data(self, process_index, process_count):
        config, spec = self.config, self.spec
        self.labeled = labeled.make_labeled(config.data, spec.channels, config.classifier.num_classes)
        self.num_classes = config.classifier.num_classes or self.labeled.num_classes
        self.process = (process_index, process_count)
        logging.info(
            'classes: %d; %d training and %d validation images',
            self.num_classes,
            len(self.labeled.train.labels),
            len(self.labeled.val.labels),
        )
        return labeled.train_iterator(
            self.labeled.train,
            config.data,
            spec.image_size,
            config.seed,
            config.batch_size,
            process_index,
            process_count,
        )

    def program(self, mesh):
        self.mesh = mesh
        self.step_program = ClassifyProgram.build_for(self.config, self.spec, self.num_classes, mesh)
        shardings = self.step_program.shardings
        batch = {name: sharding.batch_sharding(mesh) for name in ('image', 'label', 'valid')}
        self.eval_step = jax.jit(
            make_eval_step(self.spec, self.step_program.graphdef, self.step_program.rest),
            in_shardings=(shardings['params'], shardings.get('batch_stats', {}), batch),
            out_shardings=sharding.replicated(mesh),
        )
        return self.step_program

    def classifier(self, state):
        """The mae_flax classifier with the state's parameters (and batch statistics), on the host."""
        program = self.step_program
        params = trainer.host(multihost_gather(state['params']))
        stats = trainer.host(multihost_gather(state.get('batch_stats', {})))
        return nnx.merge(program.graphdef, params, *([stats] if stats else []), program.rest)

    def initialize(self, state):
        if self.arrays is None:
            logging.info('the encoder starts from a random initialisation (no --init_from)')
            return state
        model = self.classifier(state)
        load_encoder(model, self.arrays, self.init_from)
        logging.info('initialised the encoder from %s', self.init_from)
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        state['params'] = jax.tree.map(sharding.put_global, params, self.step_program.shardings['params'])
        return state

    def evaluates(self, step, last):
        return step > 0 and (step % self.config.eval_every == 0 or last)

    def evaluate(self, state, step, workdir, is_main):
        """Top-1, top-5 and loss on the whole validation split; a new best is exported to torch at once."""
        totals = None
        for local in labeled.val_batches(
            self.labeled.val,
            self.spec.image_size,
            self.config.data.eval_crop_fraction,
            self.config.eval_batch_size,
            *self.process,
        ):
            batch = sharding.global_batch(local, self.mesh)
            sums = self.eval_step(state['params'], state.get('batch_stats', {}), batch)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        totals = {name: float(value) for name, value in trainer.host(totals).items()}
        count = totals['count']
        result = dict(
            val_top1=100 * totals['correct'] / count,
            val_top5=100 * totals['correct5'] / count,
            val_loss=totals['loss'] / count,
        )
        best = self.best_so_far(workdir)
        if best is None or result['val_top1'] > best[0]:
            self.best = (result['val_top1'], step)
            model = self.classifier(state)  # every process takes part in the gather
            if is_main:
                self.export(model, workdir / BEST, step, result)
        return result

    def best_so_far(self, workdir):
        if self.best is None and model_files.spec_path(workdir / BEST).is_file():  # a resumed run's
            described = json.loads(model_files.spec_path(workdir / BEST).read_text())
            self.best = (described['val_top1'], described['step'])
        return self.best

    def export(self, model, path, step, result):
        state_dict = torch_state_dict(model)
        pool = pool_of(self.config, self.spec)
        described = description(self.config, self.spec, self.labeled.classes[: self.num_classes], pool)
        described |= dict(step=step, **result)
        with atomic_path(model_files.spec_path(path)) as tmp:
            tmp.write_text(json.dumps(described, indent=2) + '\n')
            save_state_dict_file(state_dict, path)

    def summarize(self, records, workdir, is_main):
        if records and is_main:
            report.save_classify_curve(records, workdir / 'curves.png', self.command)
        evals = [(step, r['val_top1']) for step, r in records.items() if 'val_top1' in r]
        best = self.best_so_far(workdir)
        return dict(
            last_top1=evals[-1][1] if evals else None,
            best_top1=best[0] if best else None,
            best_step=best[1] if best else None,
        )

    def summary_line(self, summary, workdir):
        line = trainer.losses_line(summary)
        if summary['last_top1'] is not None:
            line += (
                f', top-1 {summary["last_top1"]:.2f}% (best {summary["best_top1"]:.2f}% at step {summary["best_step"]})'
            )
        return line + (
            f', {summary["images_per_sec"]:.0f} images/s; in {workdir}: checkpoints, metrics.jsonl, tensorboard/, '
            f'curves.png and {BEST} (the best classifier in torch layout, described in {BEST}.json)'
        )


def multihost_gather(tree):
    """Every process's view of a tree of global arrays, fully replicated (sharded parameters gathered). One process
    copies to one device: process_allgather would compile a small program per parameter shape, at every export (over
    a minute of the test suite's CPU time, measured)."""
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: jax.device_put(x, jax.devices()[0]), tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def train(config, workdir, *, init_from=None):
    """Fine-tunes or linearly probes (config.mode) in `workdir`, resuming from its checkpoint; returns the summary."""
    workdir = trainer.local_workdir(workdir)
    return trainer.run(Classification(config, workdir, init_from), workdir)

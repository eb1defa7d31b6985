"""mae-finetune's and mae-linprobe's task for the loop (train/loop.py): its encoder from --init_from (a mae-train
workdir or any checkpoint mae-convert reads), labelled data (images; for a video model, whose description has
num_frames, clips (b, t, h, w, c) from train/data/labeled_video.py), evaluation on the whole validation split every
`eval_every` steps (top-1, top-5, loss), the best classifier exported at once to torch."""

import functools
import json
import logging
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from mae_core.errors import UsageError
from mae_core.spec import ModelSpec
from mae_flax import families, model_files
from mae_flax.convert import load_torch_state_dict, to_torch_state_dict
from mae_flax.files import hub
from mae_flax.files.models import spec_path
from mae_flax.train import config_checks, loop, report, sharding
from mae_flax.train.classify import export, steps
from mae_flax.train.data import labeled, labeled_video
from mae_flax.train.model_state import copy_to_host
from mae_flax.train.workdir import has_checkpoints, load_config, local_workdir

MODES = ('finetune', 'linprobe')
COMMANDS = {'finetune': 'mae-finetune', 'linprobe': 'mae-linprobe'}
BEST = export.BEST


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
    """mae-finetune's and mae-linprobe's task for the loop (train/loop.py)."""

    def __init__(self, config, workdir, init_from=None):
        self.command = COMMANDS.get(config.get('mode'), 'mae-finetune')
        config_checks.check_classify(config)
        self.arrays = None
        if has_checkpoints(workdir):
            spec = ModelSpec.from_dict(load_config(workdir).model.to_dict())
        elif init_from:
            if not Path(init_from).exists() and not hub.is_hub_id(init_from):
                raise UsageError(f'--init_from {init_from}: no such file or folder')
            spec, self.arrays = encoder_weights(init_from, config)
        else:
            spec = config_checks.check_model(config)
        size = config.classifier.image_size
        if size and spec.image_size != (size, size):  # fine-tuning at another resolution: positions resampled
            spec = spec.with_fields('encoder', **{spec.facts.IMAGE_SIZE: size})
        self.spec, self.init_from = spec, init_from
        self.items = 'images' if spec.num_frames is None else 'clips'
        self.config = config_checks.filled(config, spec)
        self.best = None  # (top-1, step) of the best evaluation so far

    def data(self, process_index, process_count):
        """The training iterator; the labelled splits of config.data.source, images for an image model and clips
        for a video one (its description's num_frames), a source of the other kind one line, before anything
        compiles."""
        config, spec = self.config, self.spec
        self.process = (process_index, process_count)
        kind = labeled_video.source_kind(config.data.source)
        if spec.num_frames is None:
            if kind == 'videos':
                raise UsageError(
                    f'data source {config.data.source!r} holds videos and the model is an image model ({spec.family} '
                    'family): fine-tune a video model (a video pretraining run or a VideoMAE checkpoint as '
                    '--init_from, or a video variant such as classify.py:video_motion)'
                )
            self.labeled = labeled.make_labeled(config.data, spec.channels, config.classifier.num_classes)
            self.val_batches = functools.partial(
                labeled.val_batches, self.labeled.val, spec.image_size, spec.channels, config.data.eval_crop_fraction
            )
            iterator = labeled.train_iterator(
                self.labeled.train, config.data, spec.image_size, config.seed, config.batch_size, *self.process
            )
        else:
            if kind == 'images':
                raise UsageError(
                    f'data source {config.data.source!r} holds images and the model is a video model '
                    f'({spec.num_frames} frames a clip): expected {labeled_video.MOTION!r} (the embedded clips) or a '
                    'folder of videos (train/<class>/*.mp4, val/<class>/*)'
                )
            config_checks.check_frames(config, spec)
            self.labeled = labeled_video.make_labeled(config.data, spec, config.classifier.num_classes)
            self.val_batches = functools.partial(
                labeled_video.val_batches, self.labeled.val, spec, config.data.frame_stride
            )
            iterator = labeled_video.train_iterator(
                self.labeled.train, config.data, spec, config.seed, config.batch_size, *self.process
            )
        self.num_classes = config.classifier.num_classes or self.labeled.num_classes
        logging.info(
            'classes: %d; %d training and %d validation %s',
            self.num_classes,
            len(self.labeled.train.labels),
            len(self.labeled.val.labels),
            self.items,
        )
        return iterator

    def program(self, mesh):
        self.mesh = mesh
        self.step_program = steps.classify_program(self.config, self.spec, self.num_classes, mesh)
        shardings = self.step_program.shardings
        batch = {name: sharding.batch_sharding(mesh) for name in ('image', 'label', 'valid')}
        self.eval_step = jax.jit(
            steps.make_eval_step(self.spec, self.step_program.graphdef, self.step_program.rest),
            in_shardings=(shardings['params'], shardings.get('batch_stats', {}), batch),
            out_shardings=sharding.replicated(mesh),
        )
        return self.step_program

    def classifier(self, state):
        """The mae_flax classifier with the state's parameters (and batch statistics), on the host."""
        program = self.step_program
        params = copy_to_host(sharding.gather_to_one_device(state['params']))
        stats = copy_to_host(sharding.gather_to_one_device(state.get('batch_stats', {})))
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
        """Top-1, top-5 and loss on the whole validation split, and how many of its images or clips could not be
        read (left out of the count, not replaced); a new best is exported to torch at once."""
        totals = None
        for local in self.val_batches(self.config.eval_batch_size, *self.process):
            batch = sharding.global_batch(local, self.mesh)
            sums = self.eval_step(state['params'], state.get('batch_stats', {}), batch)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        totals = {name: float(value) for name, value in copy_to_host(totals).items()}
        count, images = totals['count'], len(self.labeled.val.labels)
        if not count:
            raise UsageError(f'none of the {images} validation {self.items} of {self.config.data.source} could be read')
        result = dict(
            val_top1=100 * totals['correct'] / count,
            val_top5=100 * totals['correct5'] / count,
            val_loss=totals['loss'] / count,
            val_skipped=images - round(count),
        )
        best = self.best_so_far(workdir)
        if best is None or result['val_top1'] > best[0]:
            self.best = (result['val_top1'], step)
            model = self.classifier(state)  # every process takes part in the gather
            if is_main:
                self.export(model, workdir / BEST, step, result)
        return result

    def best_so_far(self, workdir):
        if self.best is None and spec_path(workdir / BEST).is_file():  # a resumed run's
            described = json.loads(spec_path(workdir / BEST).read_text())
            self.best = (described['val_top1'], described['step'])
        return self.best

    def export(self, model, path, step, result):
        pool = steps.pool_of(self.config, self.spec)
        described = export.description(self.config, self.spec, self.labeled.classes[: self.num_classes], pool)
        export.export(model, path, described | dict(step=step, **result))

    def summarize(self, records, workdir, is_main):
        if records and is_main:
            report.save_classify_curve(records, workdir / 'curves.png', self.command)
        evals = [record for record in records.values() if 'val_top1' in record]
        best = self.best_so_far(workdir)
        return dict(
            last_top1=evals[-1]['val_top1'] if evals else None,
            best_top1=best[0] if best else None,
            best_step=best[1] if best else None,
            val_skipped=evals[-1].get('val_skipped', 0) if evals else 0,
        )

    def summary_line(self, summary, workdir):
        line = loop.losses_line(summary)
        if summary['last_top1'] is not None:
            line += (
                f', top-1 {summary["last_top1"]:.2f}% (best {summary["best_top1"]:.2f}% at step {summary["best_step"]})'
            )
        if summary['val_skipped']:
            line += f', {summary["val_skipped"]} unreadable validation {self.items} left out'
        return line + (
            f', {summary["images_per_sec"]:.0f} {self.items}/s; in {workdir}: checkpoints, metrics.jsonl, tensorboard/, '
            f'curves.png and {BEST} (the best classifier in torch layout, described in {BEST}.json)'
        )


def train(config, workdir, *, init_from=None, wait=False):
    """Fine-tunes or linearly probes (config.mode) in `workdir`, resuming from its checkpoint; returns the summary."""
    workdir = local_workdir(workdir)
    return loop.run(Classification(config, workdir, init_from), workdir, wait=wait)

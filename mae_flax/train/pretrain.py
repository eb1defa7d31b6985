"""MAE pretraining (mae-train) as a task for the loop: images without labels, the masking noise drawn per step,
evaluation on a fixed batch of images and masks with its reconstruction grids, --init_from torch weights."""

import logging
import warnings
from pathlib import Path

import jax
from flax import nnx
from jax.experimental import multihost_utils

from mae_core.errors import UsageError
from mae_flax import families, fixed_tables, heldout
from mae_flax.convert import load_torch_state_dict
from mae_flax.files import hf_folders, hub, weights
from mae_flax.train import config_checks, data, loop, report, sharding, steps, workdir
from mae_flax.train.data import video
from mae_flax.train.model_state import copy_to_host, params_of

CLASSIFIER_HEADS = ('mlp_head.', 'head.', 'fc_norm.', 'classifier.')  # vit-pytorch, timm, HuggingFace


def train(config, workdir_path, *, init_from=None, wait=False):
    """Trains (or resumes) in `workdir_path`; returns a summary dict. Raises UsageError for a mistake in the config,
    the workdir or the data, before anything is created or compiled, FloatingPointError on a NaN/Inf loss and
    state_checkpoints.CheckpointError when a checkpoint cannot be written. `wait`: for another run writing there."""
    workdir_path = workdir.workdir_path(workdir_path)
    spec = config_checks.check(config)
    return loop.run(Pretraining(config, spec, workdir_path, init_from), workdir_path, wait=wait)


def read_init_from(path, spec):
    """(torch state dict, the model's own fixed tables) of --init_from, checked against the run's model before
    anything compiles: a file or a HuggingFace folder of the run's family, an MAE or its encoder alone."""
    try:
        state_dict = hf_folders.state_dict(path) if Path(path).is_dir() else weights.read_state_dict(path)
    except UsageError as error:
        raise UsageError(f'--init_from {path}: {error}') from error
    family, kind = families.detect(state_dict, path)
    if family.name != spec.family:
        raise UsageError(f'--init_from {path} is a {family.name} model; this run trains {spec.family}')
    probe = families.build_abstract(spec)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', 'loaded the encoder alone')  # said in the log, at initialisation
            load_torch_state_dict(probe, _encoder_keys(state_dict, family, probe) if kind == 'ViT' else state_dict)
    except ValueError as error:
        raise UsageError(f"--init_from {path} does not fit the run's model: {error}") from error
    return state_dict, fixed_tables.own_tables(probe)


def _encoder_keys(state_dict, family, model):
    """A classifier's state dict without its head, which MAE does not use (unless the model has one)."""
    layout = family.detect(state_dict)[1]
    expected = {key for row in family.table(model, layout, True) for key in row.keys}
    return {key: value for key, value in state_dict.items() if key in expected or not key.startswith(CLASSIFIER_HEADS)}


def init_from_torch(path, params, graphdef, rest, shardings, state_dict=None):
    """Parameters from a torch state dict of the run's family (`state_dict`, else read from `path`: a file, or a
    HuggingFace folder): a full MAE, or an encoder alone (the decoder keeps its fresh initialisation; a classifier
    head, which MAE does not use, is dropped if the run has none)."""
    if state_dict is None:
        try:
            state_dict = hf_folders.state_dict(path) if Path(path).is_dir() else weights.read_state_dict(path)
        except UsageError as error:
            raise UsageError(f'--init_from {path}: {error}') from error
    model = nnx.merge(graphdef, multihost_utils.process_allgather(params, tiled=True), rest)
    family, kind = families.detect(state_dict, path)
    if family is not families.of(model):
        raise UsageError(f'--init_from {path} is a {family.name} model; this run trains {families.of(model).name}')
    if kind == 'ViT':
        state_dict = _encoder_keys(state_dict, family, model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the encoder-alone and own-table warnings: said before, and in the log
            load_torch_state_dict(model, state_dict)
    except ValueError as error:
        raise UsageError(f"--init_from {path} does not fit the run's model: {error}") from error
    logging.info('initialised %s from torch weights %s', 'the MAE' if kind == 'MAE' else 'the encoder', path)
    return jax.tree.map(lambda value, s: sharding.put_global(value, s), params_of(model), shardings)


class Pretraining:
    """mae-train's task for the loop (train/loop.py): MAE pretraining on images without labels. Its evaluation is
    the loss on a fixed batch of images and masks, and the reconstruction grids of that batch. The model's own
    fixed tables (from --init_from, then the workdir's fixed_tables.safetensors) are constants of its step."""

    command = 'mae-train'

    def __init__(self, config, spec, workdir_path, init_from=None):
        if init_from:
            init_from = hub.locate(init_from)  # a Hub id -> its snapshot folder
            if not init_from.exists():
                raise UsageError(f'--init_from {init_from}: no such file or folder')
        self.config = config_checks.filled(config, spec)
        self.spec, self.init_from, self.workdir = spec, init_from, workdir_path
        self.items = 'images' if spec.num_frames is None else 'clips'  # what a batch holds, in the log lines
        self.eval_batch, self.state_dict, self.tables = None, None, {}
        self.heldout = None  # (pixels, noise) of the held-out photos (mae_flax.heldout), for an image model
        if workdir.has_checkpoints(workdir_path):  # resumed: the workdir's tables (--init_from is not read)
            self.tables = workdir.read_tables(workdir_path)
        elif init_from:
            self.state_dict, self.tables = read_init_from(init_from, spec)

    def data(self, process_index, process_count):
        """The training iterator (this process's rows of each batch); a missing or empty source fails here, before
        anything compiles."""
        config, spec = self.config, self.spec
        if spec.num_frames is not None:  # a video model: clips (train/data/video.py)
            self.source = video.make_source(config.data.source, spec.image_size, spec.channels)
            if config.num_eval_images:
                self.eval_batch = video.eval_clips(
                    self.source, config.data, spec, config.seed + 1, config.num_eval_images
                )
            return video.train_iterator(
                self.source, config.data, spec, config.seed, config.batch_size, process_index, process_count
            )
        self.source = data.make_source(config.data.source, spec.image_size, spec.channels)
        if config.num_eval_images:  # 0: no reconstruction grids, no eval loss, no held-out figure
            self.eval_batch = data.eval_images(
                self.source, config.data, spec.image_size, config.seed + 1, config.num_eval_images
            )
            self.heldout = heldout.masked_batch(heldout.crops(spec.image_size, spec.channels), spec.num_patches)
        return data.train_iterator(
            self.source, config.data, spec.image_size, config.seed, config.batch_size, process_index, process_count
        )

    def program(self, mesh):
        self.mesh = mesh
        self.step_program = steps.pretrain_program(self.config, mesh, self.tables)
        self.eval_step = jax.jit(
            steps.make_eval_step(self.config, self.step_program.graphdef, self.step_program.rest),
            in_shardings=(self.step_program.shardings['params'], sharding.replicated(mesh), sharding.replicated(mesh)),
            out_shardings=sharding.replicated(mesh),
        )
        return self.step_program

    def initialize(self, state):
        """A fresh state's parameters from --init_from, if given; its own fixed tables kept in the workdir."""
        if self.init_from:
            program = self.step_program
            state['params'] = init_from_torch(
                self.init_from,
                state['params'],
                program.graphdef,
                program.rest,
                program.shardings['params'],
                self.state_dict,
            )
            self.state_dict = None  # the weights are in the state now
        if self.tables and jax.process_index() == 0:
            workdir.write_tables(self.workdir, self.tables)
            logging.info('the model keeps its own fixed tables %s: %s', ', '.join(self.tables), workdir.TABLES)
        return state

    def evaluates(self, step, last):
        return self.eval_batch is not None and (step % self.config.image_every == 0 or last)

    def evaluate(self, state, step, workdir_path, is_main):
        """{'eval_loss': the loss on the fixed eval batch and mask}; process 0 draws its reconstructions."""
        spec, mesh = self.spec, self.mesh
        noise = jax.random.uniform(jax.random.PRNGKey(self.config.seed + 2), (len(self.eval_batch), spec.num_patches))
        eval_inputs = (sharding.put_global(self.eval_batch, sharding.replicated(mesh)), noise)
        loss, pred, masked_indices = copy_to_host(self.eval_step(state['params'], *eval_inputs))
        if is_main:
            report.save_reconstructions(
                workdir_path / 'images' / f'step_{step:06d}.png',
                spec.normalize(self.eval_batch),
                pred,
                masked_indices,
                spec,
            )
        return dict(eval_loss=float(loss)) | self.heldout_figures(state)

    def heldout_figures(self, state):
        """{'heldout_ratio', 'blur_ratio'}: how the model fills the masked patches of photographs it never trained
        on, against the mean colour fill, beside a training-free blur's (mae_flax.heldout); the model's figure only
        from pixel predictions (a norm_pix_loss model has none)."""
        if self.heldout is None:
            return {}
        pixels, noise = self.heldout
        inputs = (sharding.put_global(pixels, sharding.replicated(self.mesh)), noise)
        _, pred, masked_indices = copy_to_host(self.eval_step(state['params'], *inputs))
        figures = heldout.figures(
            pixels, heldout.pixel_predictions(pred, self.spec), masked_indices, self.spec.patch_size
        )
        return {name: value for name, value in figures.items() if value is not None}

    def summarize(self, records, workdir_path, is_main):
        """What the summary adds: the eval losses of the first and last evaluations, skipped images; process 0
        draws the loss curve (`records` are metrics.jsonl's, read by process 0 only)."""
        if records and is_main:
            report.save_loss_curve(records, workdir_path / 'loss_curve.png')
        eval_losses = [r['eval_loss'] for r in records.values() if 'eval_loss' in r]
        figures = [r for r in records.values() if 'blur_ratio' in r]
        return dict(
            first_eval_loss=eval_losses[0] if eval_losses else None,
            last_eval_loss=eval_losses[-1] if eval_losses else None,
            skipped_images=len(getattr(self.source, 'skipped', ())),
            heldout_ratio=figures[-1].get('heldout_ratio') if figures else None,
            blur_ratio=figures[-1]['blur_ratio'] if figures else None,
        )

    def summary_line(self, summary, workdir_path):
        line = loop.losses_line(summary)
        if summary['first_eval_loss'] is not None:
            line += f', eval loss (fixed images and masks) {summary["first_eval_loss"]:.4f} -> {summary["last_eval_loss"]:.4f}'
        if summary.get('blur_ratio') is not None:
            model = summary['heldout_ratio']
            said = f'{model:.2f}' if model is not None else 'not available (norm_pix_loss predicts no pixels)'
            line += (
                f"; on held-out photos the reconstruction's masked-patch error is {said} of the mean colour fill's "
                f'(a blur of the visible patches: {summary["blur_ratio"]:.2f}; lower is better)'
            )
        line += f', {summary["images_per_sec"]:.0f} {self.items}/s'
        if summary['skipped_images']:
            line += (
                f', {summary["skipped_images"]} unreadable {"images" if self.items == "images" else "videos"} skipped'
            )
        pictures = (
            '(each clip as three strips of its frames: original, masked, reconstruction with the visible tubes '
            'pasted back)'
            if video
            else '(each row: original | masked | reconstruction of the masked patches | the same with the visible '
            'patches pasted back)'
        )
        return (
            line
            + f'; in {workdir_path}: checkpoints, metrics.jsonl, tensorboard/, loss_curve.png and images/ {pictures}'
        )

"""Every user-facing field of a training config, checked before anything is created or compiled: a mistake is one
UsageError naming the field, what came and what is allowed."""

import math

import ml_collections

from mae_core import fields
from mae_core.errors import UsageError
from mae_core.spec import ModelSpec
from mae_flax import families
from mae_flax.stack import REMAT_POLICIES
from mae_flax.train.data import augment

DTYPES = ('float32', 'bfloat16', 'float16')


def _non_negative_float(name, value):
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise UsageError(f'{name} must be a number >= 0, got {value!r}')
    return value


def _interval(low, high, *, low_open=False, high_open=False):
    """A check that a field is a number in the interval, written as it is named ('[0, 1)', '(0, 1]', ...)."""
    shown = f'{"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'

    def check(name, value):
        number = not isinstance(value, bool) and isinstance(value, int | float)
        inside = (
            number and (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
        )
        if not inside:
            raise UsageError(f'{name} must be a number in {shown}, got {value!r}')
        return value

    return check


_beta = _interval(0, 1, high_open=True)  # Adam's betas, momentum, drop rates, label smoothing: [0, 1)
_ratio = _interval(0, 1)
_open_ratio = _interval(0, 1, low_open=True, high_open=True)
_open_ratio_or_one = _interval(0, 1, low_open=True)


def _crop_scale(name, value):
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not 0 < value[0] <= value[1] <= 1
    ):
        raise UsageError(f'{name} must be (low, high) with 0 < low <= high <= 1, got {value!r}')
    return value


def _mesh_axis(name, value):
    if value != -1:
        fields.positive_int(name, value)
    return value


def _integer(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f'{name} must be an integer, got {value!r}')
    return value


def _string(name, value):
    if not isinstance(value, str):
        raise UsageError(f'{name} must be a string, got {value!r}')
    return value


CHECKS = {
    'seed': _integer,
    'dtype': fields.choice(*DTYPES),
    'scan_layers': fields.boolean,
    'remat': fields.choice(*REMAT_POLICIES),
    'total_steps': fields.positive_int,
    'batch_size': fields.positive_int,
    'grad_accum_steps': fields.positive_int,
    'optim.base_lr': fields.positive_float,
    'optim.min_lr': _non_negative_float,
    'optim.warmup_steps': fields.non_negative_int,
    'optim.b1': _beta,
    'optim.b2': _beta,
    'optim.weight_decay': _non_negative_float,
    'optim.grad_clip_norm': _non_negative_float,
    'data.crop_scale': _crop_scale,
    'data.flip': fields.boolean,
    'data.num_threads': fields.positive_int,
    'data.prefetch': fields.non_negative_int,
    'data.workers': fields.non_negative_int,
    'data.draft': fields.boolean,
    'mesh.data': _mesh_axis,
    'mesh.fsdp': fields.positive_int,
    'mesh.fsdp_min_size': fields.non_negative_int,
    'checkpoint.every_steps': fields.positive_int,
    'compilation_cache': _string,
    'checkpoint.keep': fields.positive_int,
    'log_every': fields.positive_int,
    'image_every': fields.positive_int,
    'num_eval_images': fields.non_negative_int,
}


def _get(config, dotted):
    value = config
    for part in dotted.split('.'):
        value = value[part]
    return value


def check(config):
    """The run's ModelSpec, once every field of `config` (an ml_collections.ConfigDict) is known to be valid."""
    for name, check_field in CHECKS.items():
        check_field(f'config.{name}', _get(config, name))
    for name in augment.COLOR_FIELDS:  # pretraining's colour augmentations (older configs have none: off)
        _ratio(f'config.data.{name}', config.data.get(name, 0.0))
    spec = check_model(config)
    if spec.mae is None:
        raise UsageError('config.model.mae is empty: mae-train pretrains an MAE, it needs the decoder keywords')
    check_frames(config, spec)
    return spec


def check_frames(config, spec):
    """A video model's clips take a frame every config.data.frame_stride: present, a positive integer."""
    if spec.num_frames is not None:
        if 'frame_stride' not in config.data:
            raise UsageError('config.data.frame_stride is missing: a video model takes a frame every frame_stride')
        fields.positive_int('config.data.frame_stride', config.data.frame_stride)


SHARED = ('seed', 'dtype', 'scan_layers', 'remat', 'total_steps', 'batch_size', 'grad_accum_steps')
SHARED += tuple(name for name in CHECKS if name.startswith(('optim.', 'data.', 'mesh.', 'checkpoint.')))
CLASSIFY_CHECKS = {name: CHECKS[name] for name in SHARED} | {
    'compilation_cache': _string,
    'log_every': fields.positive_int,
    'mode': fields.choice('finetune', 'linprobe'),
    'optim.layer_decay': _ratio,
    'optim.momentum': _beta,
    'classifier.num_classes': fields.non_negative_int,
    'classifier.image_size': fields.non_negative_int,
    'classifier.pool': _string,
    'classifier.drop_path_rate': _beta,
    'classifier.label_smoothing': _beta,
    'classifier.head_init_std': _non_negative_float,
    'mixup.mixup_alpha': _non_negative_float,
    'mixup.cutmix_alpha': _non_negative_float,
    'mixup.switch_prob': _ratio,
    'mixup.prob': _ratio,
    'data.val_fraction': _open_ratio,
    'data.eval_crop_fraction': _open_ratio_or_one,
    'eval_every': fields.positive_int,
    'eval_batch_size': fields.positive_int,
}


def check_classify(config):
    """Every field of a fine-tuning or linear-probing config (the model is checked where it is known: from
    --init_from, the resumed run, or config.model)."""
    for name, check_field in CLASSIFY_CHECKS.items():
        try:
            value = _get(config, name)
        except (KeyError, AttributeError):
            raise UsageError(f'config.{name} is missing: start from mae_flax/configs/classify.py') from None
        check_field(f'config.{name}', value)


def check_model(config):
    """config.model as a checked ModelSpec, built abstractly (what only the constructors know)."""
    try:
        spec = ModelSpec.from_dict(config.model.to_dict())
    except UsageError as error:
        raise UsageError(f'config.{error}' if str(error).startswith('model') else f'config.model: {error}') from error
    try:  # what only the constructors know (sizes that divide, a ratio that masks a patch), without compiling
        families.build_abstract(spec)
    except UsageError as error:
        raise UsageError(f'config.model: {error}') from error
    return spec


def filled(config, spec):
    """The config with config.model as the checked spec writes it (every default filled in): what a run records in
    its config.json and builds from."""
    return ml_collections.ConfigDict(config.to_dict() | {'model': spec.to_dict()})

"""The one description of a model: which family, its encoder's and decoder's keywords, and the pixel statistics
its inputs are standardised with. Written identically into a run's config.json (`model`), beside every Flax
checkpoint and every exported torch file (`NAME.json`), and read by the commands, the parity suite and the
benchmarks, so every tool builds the same model and feeds it what it was trained on.

    {"family": "vit_pytorch",
     "encoder": {"image_size": 32, "patch_size": 4, "dim": 96, ...},     # the family's encoder keywords
     "mae": {"decoder_dim": 64, "masking_ratio": 0.75, ...},             # its MAE keywords; null for an encoder
     "pixel_mean": [0.485, 0.456, 0.406], "pixel_std": [0.229, 0.224, 0.225]}

A model sees (pixels in [0, 1] - pixel_mean) / pixel_std, per channel.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from mae_core import fields, official, videomae, vit_pytorch
from mae_core.errors import UsageError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# each family's facts: field checks and defaults, the names of its size fields, its masking convention
FAMILIES = {vit_pytorch.NAME: vit_pytorch, official.NAME: official, videomae.NAME: videomae}

# encoder widths by name, as big_vision's decode_variant: 'B/16' is B with 16-pixel patches
SIZES = {
    'tiny': dict(dim=96, depth=3, heads=3, dim_head=32, mlp_dim=192),  # seconds per step on a 2-core CPU
    'Ti': dict(dim=192, depth=12, heads=3, dim_head=64, mlp_dim=768),
    'S': dict(dim=384, depth=12, heads=6, dim_head=64, mlp_dim=1536),
    'B': dict(dim=768, depth=12, heads=12, dim_head=64, mlp_dim=3072),
    'L': dict(dim=1024, depth=24, heads=16, dim_head=64, mlp_dim=4096),
    'H': dict(dim=1280, depth=32, heads=16, dim_head=80, mlp_dim=5120),
}
# the MAE paper's decoder: 8 blocks, 512 wide, 16 heads
PAPER_DECODER = dict(decoder_dim=512, decoder_depth=8, decoder_heads=16, decoder_dim_head=32)


def decode_variant(variant):
    """'B/16' -> {dim, depth, heads, dim_head, mlp_dim, patch_size}; 'B' alone leaves the patch size out."""
    name, _, patch = variant.partition('/')
    if name not in SIZES or (patch and not patch.isdigit()):
        raise UsageError(f'unknown model variant {variant!r}: expected one of {", ".join(SIZES)}, then /patch_size')
    return dict(SIZES[name]) | ({'patch_size': int(patch)} if patch else {})


def _checked(part, values, checks, defaults):
    """The family's fields of one part, checked, defaults filled in, in the family's order."""
    if not isinstance(values, dict):
        raise UsageError(f'model.{part} must be a mapping of keywords, got {type(values).__name__}')
    unknown = sorted(set(values) - set(checks))
    if unknown:
        raise UsageError(f'model.{part} has no field {unknown[0]!r}: its fields are {", ".join(checks)}')
    missing = [name for name in checks if name not in values and name not in defaults]
    if missing:
        raise UsageError(f'model.{part}.{missing[0]} is required')
    return {name: check(f'model.{part}.{name}', values.get(name, defaults.get(name))) for name, check in checks.items()}


def _stats(name, values, channels):
    values = tuple(values) if isinstance(values, list | tuple) else (values,)
    if len(values) != channels or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise UsageError(f'model.{name} must be {channels} numbers, one per channel, got {values!r}')
    if name == 'pixel_std' and not all(v > 0 for v in values):
        raise UsageError(f'model.pixel_std must be positive, got {values!r}')
    return tuple(float(v) for v in values)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A checked model description; `encoder` and `mae` hold the family's constructor keywords."""

    family: str
    encoder: dict
    mae: dict | None = None
    pixel_mean: tuple = None  # None: ImageNet's for 3 channels, their average otherwise
    pixel_std: tuple = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise UsageError(f'model.family must be one of {", ".join(map(repr, FAMILIES))}, got {self.family!r}')
        facts = FAMILIES[self.family]
        encoder = _checked('encoder', self.encoder, facts.ENCODER_FIELDS, facts.ENCODER_DEFAULTS)
        mae = None if self.mae is None else _checked('mae', self.mae, facts.MAE_FIELDS, facts.MAE_DEFAULTS)
        channels = encoder[facts.CHANNELS]
        mean, std = self.pixel_mean, self.pixel_std
        if mean is None:
            mean = IMAGENET_MEAN if channels == 3 else (float(np.mean(IMAGENET_MEAN)),) * channels
        if std is None:
            std = IMAGENET_STD if channels == 3 else (float(np.mean(IMAGENET_STD)),) * channels
        object.__setattr__(self, 'encoder', encoder)
        object.__setattr__(self, 'mae', mae)
        object.__setattr__(self, 'pixel_mean', _stats('pixel_mean', mean, channels))
        object.__setattr__(self, 'pixel_std', _stats('pixel_std', std, channels))

    # what every family has, under its own names
    @property
    def facts(self):
        return FAMILIES[self.family]

    @property
    def kind(self):
        """'MAE', or 'ViT' for an encoder alone."""
        return 'ViT' if self.mae is None else 'MAE'

    @property
    def image_size(self):
        return fields.pair(self.encoder[self.facts.IMAGE_SIZE])

    @property
    def patch_size(self):
        return fields.pair(self.encoder[self.facts.PATCH_SIZE])

    @property
    def channels(self):
        return self.encoder[self.facts.CHANNELS]

    @property
    def num_frames(self):
        """Frames per clip for a video family (its facts name NUM_FRAMES), None for images."""
        field = getattr(self.facts, 'NUM_FRAMES', None)
        return None if field is None else self.encoder[field]

    @property
    def input_shape(self):
        """One input as the Flax model takes it: (h, w, c) for images, (t, h, w, c) for a video clip."""
        frames = () if self.num_frames is None else (self.num_frames,)
        return (*frames, *self.image_size, self.channels)

    @property
    def num_patches(self):
        (height, width), (patch_height, patch_width) = self.image_size, self.patch_size
        return (height // patch_height) * (width // patch_width)

    @property
    def masking_ratio(self):
        return None if self.mae is None else self.mae[self.facts.MASKING_RATIO]

    @property
    def norm_pix_loss(self):
        return False if self.mae is None else self.mae[self.facts.NORM_PIX_LOSS]

    @property
    def num_masked(self):
        return self.facts.MASKING.num_masked(self.masking_ratio, self.num_patches)

    def replace(self, **changes):
        """A copy with some top-level fields changed (e.g. mae=None for the encoder alone), checked again."""
        return dataclasses.replace(self, **changes)

    def with_fields(self, part, **changes):
        """A copy with some keywords of `part` ('encoder' or 'mae') changed."""
        return self.replace(**{part: getattr(self, part) | changes})

    # images
    def normalize(self, images):
        """(b, h, w, c) pixels -> float32 as the model sees them: floats in [0, 1], or uint8 0..255 as the input
        pipeline makes them. numpy or jax arrays (inside jit too): what comes in is what goes out."""
        images = images if hasattr(images, 'astype') else np.asarray(images)
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / np.float32(255)
        return ((images.astype(np.float32) - np.float32(self.pixel_mean)) / np.float32(self.pixel_std)).astype(
            np.float32
        )

    def denormalize(self, images):
        """The inverse of `normalize`: what the model sees -> pixels (nominally in [0, 1])."""
        return np.asarray(images, np.float32) * np.float32(self.pixel_std) + np.float32(self.pixel_mean)

    # serialisation
    def to_dict(self):
        def plain(value):
            return list(value) if isinstance(value, tuple) else value

        return {
            'family': self.family,
            'encoder': {name: plain(value) for name, value in self.encoder.items()},
            'mae': None if self.mae is None else {name: plain(value) for name, value in self.mae.items()},
            'pixel_mean': list(self.pixel_mean),
            'pixel_std': list(self.pixel_std),
        }

    @classmethod
    def from_dict(cls, values):
        """From `to_dict`'s output (lists for tuples), a ConfigDict's `to_dict()`, or the sidecar JSON that
        mae-convert wrote before model descriptions ({'model': 'MAE', 'vit': ..., 'mae': ...})."""
        if not isinstance(values, dict):
            raise UsageError(f'a model description is a mapping, got {type(values).__name__}')
        if 'vit' in values and 'family' not in values:  # the sidecar of mae-convert 0.1
            values = {'family': vit_pytorch.NAME, 'encoder': values['vit'], 'mae': values.get('mae')}
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise UsageError(f'model has no field {unknown[0]!r}: expected family, encoder, mae, pixel_mean, pixel_std')
        if 'family' not in values or 'encoder' not in values:
            raise UsageError('a model description needs at least "family" and "encoder"')

        def tuples(part):
            if part is None:
                return None
            return {name: tuple(value) if isinstance(value, list) else value for name, value in dict(part).items()}

        return cls(
            family=values['family'],
            encoder=tuples(values['encoder']),
            mae=tuples(values.get('mae')),
            pixel_mean=values.get('pixel_mean'),
            pixel_std=values.get('pixel_std'),
        )

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2) + '\n'

    @classmethod
    def read(cls, path):
        """From a JSON file; a UsageError naming the file if it is not a model description."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UsageError(f'{path} is not a readable model description: {error}') from error
        try:
            return cls.from_dict(values)
        except UsageError as error:
            raise UsageError(f'{path}: {error}') from error

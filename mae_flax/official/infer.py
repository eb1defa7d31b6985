"""An official-family ModelSpec from a state dict in any of its layouts: what the tensor shapes say, and what not.

The shapes fix embed_dim, depth, mlp_ratio, patch_size and in_chans (the patch convolution is (D, C, p, q)), the
number of patches (the position table's rows, less the cls row) and the decoder's widths and depth. They do not fix:
- num_heads and decoder_num_heads (the fused qkv is (3D, D) whatever the split): given, or an error naming the flag
  (a HuggingFace folder's config.json gives them);
- the grid's height vs width: a square grid is assumed unless img_size is given;
- layer_norm_eps (assumed facebookresearch/mae's 1e-6; HuggingFace configs say theirs), mask_ratio (0.75),
  norm_pix_loss (off) and the pixel statistics (ImageNet's, which facebookresearch/mae and HuggingFace use);
- an encoder file's decoder: assumed facebookresearch/mae's (512 wide, 8 blocks, 16 heads), freshly initialised.
"""

from mae_core import official
from mae_core.errors import UsageError
from mae_core.fields import compact
from mae_core.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from mae_flax.official.table import _NAMES
from mae_flax.shape_inference import Fields, read_image_size


def _count(arrays, blocks, first_part):
    depth = 0
    while f'{blocks}.{depth}.{first_part}.weight' in arrays:
        depth += 1
    return depth


def _heads(fields, name, width):
    if name not in fields.given:
        raise UsageError(f'cannot tell {name} from the weights (any split of {width} works): pass --{name}')
    value = fields.given[name][0]
    if not isinstance(value, int) or value < 1 or width % value:
        raise UsageError(f'{name} = {value} does not divide the width {width}')
    return fields.read(name, value)


def infer(arrays, given, name):
    """(ModelSpec, sources) for a state dict `arrays` of this family (mae_core.official.detect recognised it);
    `given` is {field: (value, source)} from flags, a HuggingFace config or a JSON beside the file."""
    kind, layout = official.detect(arrays)
    block, encoder_blocks, decoder_blocks, names = _NAMES[layout.removesuffix('_model')]
    if layout.endswith('_model'):
        names = {part: key.removeprefix('vit.') for part, key in names.items()}
        encoder_blocks = encoder_blocks.removeprefix('vit.')
    fields = Fields(given)

    weight = arrays[f'{names["proj"]}.weight']  # (D, C, p, q)
    embed_dim = fields.read('embed_dim', weight.shape[0])
    fields.read('in_chans', weight.shape[1])
    patch = fields.read('patch_size', compact(weight.shape[2:]))
    num_patches = arrays[names['pos']].shape[-2] - 1
    read_image_size(fields, 'img_size', patch, num_patches, 'position table')
    fields.read('depth', _count(arrays, encoder_blocks, block['norm1']))
    fc1 = f'{block["fc1"]}.weight'
    fields.read('mlp_ratio', arrays[f'{encoder_blocks}.0.{fc1}'].shape[0] / embed_dim)
    _heads(fields, 'num_heads', embed_dim)
    fields.choose('layer_norm_eps', 1e-6)
    encoder = {field: fields.values[field] for field in official.ENCODER_FIELDS}

    if kind == 'MAE':
        decoder_dim = fields.read('decoder_embed_dim', arrays[f'{names["embed"]}.weight'].shape[0])
        fields.read('decoder_depth', _count(arrays, decoder_blocks, block['norm1']))
        fields.read('decoder_mlp_ratio', arrays[f'{decoder_blocks}.0.{fc1}'].shape[0] / decoder_dim)
        _heads(fields, 'decoder_num_heads', decoder_dim)
    else:  # an encoder's file: upstream's decoder, to be trained
        for field in ('decoder_embed_dim', 'decoder_depth', 'decoder_num_heads', 'decoder_mlp_ratio'):
            fields.choose(field, official.MAE_DEFAULTS[field])
    fields.choose('mask_ratio', 0.75)
    fields.choose('norm_pix_loss', False)
    mae = {field: fields.values[field] for field in official.MAE_FIELDS}
    channels = fields.values['in_chans']
    mean = fields.choose('pixel_mean', IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,) * channels)
    std = fields.choose('pixel_std', IMAGENET_STD if channels == 3 else (sum(IMAGENET_STD) / 3,) * channels)
    return ModelSpec(official.NAME, encoder, mae, pixel_mean=mean, pixel_std=std), fields.sources

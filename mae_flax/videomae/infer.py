"""A VideoMAE-family ModelSpec from a state dict in any of its layouts: what the tensor shapes say, and what not.

The shapes fix hidden_size, num_channels, tubelet_size and patch_size (the tubelet convolution is (D, C, t, p, p)),
the depth, intermediate_size, qkv_bias (whether the q and v biases are there), use_mean_pooling (whether the encoder
has a final norm) and the decoder's width, depth and intermediate size. They do not fix:
- num_attention_heads and decoder_num_attention_heads (the fused qkv is (3D, D) whatever the split): given, or an
  error naming the flag (a HuggingFace folder's config.json gives them);
- image_size and num_frames: no layout stores the position table, the one tensor sized by them; assumed VideoMAE's
  224 and 16 unless given;
- the LayerNorm epsilons (assumed MCG-NJU's 1e-6 for its layout, transformers' 1e-12 and 1e-5 for HuggingFace's),
  mask_ratio (the paper's 0.9), norm_pix_loss (on, as both upstreams) and the pixel statistics (ImageNet's);
- an encoder file's decoder: assumed transformers' default (384 wide, 4 blocks, 6 heads), freshly initialised.
"""

from mae_core import videomae
from mae_core.errors import UsageError
from mae_core.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from mae_flax.official.infer import _count, _heads
from mae_flax.shape_inference import Fields
from mae_flax.videomae.table import _NAMES

# what each layout's upstream uses where the weights do not say: (layer_norm_eps, decoder_norm_eps)
_EPSILONS = {'mcg': (1e-6, 1e-6), 'hf': (1e-12, 1e-5), 'hf5': (1e-12, 1e-5)}


def infer(arrays, given, name):
    """(ModelSpec, sources) for a state dict `arrays` of this family (mae_core.videomae.detect recognised it);
    `given` is {field: (value, source)} from flags, a HuggingFace config or a JSON beside the file."""
    kind, layout = videomae.detect(arrays)
    base = layout.removesuffix('_model')
    block, names = _NAMES[base]
    if layout.endswith('_model') or (kind == 'ViT' and base == 'mcg'):  # as table.table names an encoder alone
        prefix = 'encoder.' if base == 'mcg' else 'videomae.'
        names = {part: key.removeprefix(prefix) for part, key in names.items()}
    fields = Fields(given)

    weight = arrays[f'{names["proj"]}.weight']  # (D, C, t, p, q)
    if weight.ndim != 5 or weight.shape[3] != weight.shape[4]:
        raise UsageError(f'{name}: the tubelet projection is {tuple(weight.shape)}, expected a (D, C, t, p, p) Conv3d')
    hidden = fields.read('hidden_size', weight.shape[0])
    fields.read('num_channels', weight.shape[1])
    fields.read('tubelet_size', weight.shape[2])
    fields.read('patch_size', weight.shape[3])
    fields.read('num_hidden_layers', _count(arrays, names['blocks'], block['norm1']))
    fields.read('intermediate_size', arrays[f'{names["blocks"]}.0.{block["fc1"]}.weight'].shape[0])
    fields.read('qkv_bias', f'{names["blocks"]}.0.{block["q_bias"]}' in arrays)
    fields.read('use_mean_pooling', f'{names["norm"]}.weight' not in arrays)
    _heads(fields, 'num_attention_heads', hidden)
    fields.choose('image_size', videomae.ENCODER_DEFAULTS['image_size'])
    fields.choose('num_frames', videomae.ENCODER_DEFAULTS['num_frames'])
    eps, decoder_eps = _EPSILONS[base]
    fields.choose('layer_norm_eps', eps)
    encoder = {field: fields.values[field] for field in videomae.ENCODER_FIELDS}

    if kind == 'MAE':
        decoder = fields.read('decoder_hidden_size', arrays['encoder_to_decoder.weight'].shape[0])
        fields.read('decoder_num_hidden_layers', _count(arrays, names['decoder_blocks'], block['norm1']))
        fc1 = f'{names["decoder_blocks"]}.0.{block["fc1"]}.weight'
        fields.read('decoder_intermediate_size', arrays[fc1].shape[0])
        _heads(fields, 'decoder_num_attention_heads', decoder)
    else:  # an encoder's file: transformers' default decoder, to be trained
        for field in ('decoder_hidden_size', 'decoder_num_hidden_layers', 'decoder_num_attention_heads',
                      'decoder_intermediate_size'):  # fmt: skip
            fields.choose(field, videomae.MAE_DEFAULTS[field])
    fields.choose('decoder_norm_eps', decoder_eps)
    fields.choose('mask_ratio', videomae.MAE_DEFAULTS['mask_ratio'])
    fields.choose('norm_pix_loss', videomae.MAE_DEFAULTS['norm_pix_loss'])
    mae = {field: fields.values[field] for field in videomae.MAE_FIELDS}
    channels = fields.values['num_channels']
    mean = fields.choose('pixel_mean', IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,) * channels)
    std = fields.choose('pixel_std', IMAGENET_STD if channels == 3 else (sum(IMAGENET_STD) / 3,) * channels)
    spec = ModelSpec(videomae.NAME, encoder, mae, pixel_mean=mean, pixel_std=std)
    try:
        videomae.grid(spec.encoder['image_size'], spec.encoder['patch_size'], spec.encoder['num_frames'],
                      spec.encoder['tubelet_size'])  # fmt: skip
    except ValueError as error:
        raise UsageError(f'{name}: {error}') from error
    return spec, fields.sources

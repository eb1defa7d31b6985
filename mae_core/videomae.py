"""The VideoMAE family (Tong et al. 2022; MCG-NJU/VideoMAE, HuggingFace's VideoMAEForPreTraining): the facts both
backends need.

Its conventions, unlike the image families':
- videos are cut into tubelets of `tubelet_size` frames x `patch_size` x `patch_size` pixels (a Conv3d with that
  kernel and stride), token i = (frame-group t, row h, column w) in that order, a patch vector laid out (t, p, q, c);
- tube masking: ONE spatial mask per video, repeated over every frame-group (MCG-NJU's TubeMaskingGenerator), of
  `int(mask_ratio * patches_per_frame)` masked patches; from the masking noise (b, patches_per_frame) the patches with
  the SMALLEST noise are KEPT (as facebookresearch/mae); `bool_masked_pos` (b, tokens), transformers' own input, may
  be given instead;
- no cls token; fixed 1-D sinusoid positions over the token sequence (`sinusoid_table`), never trained;
- attention with q and v biases and a zero k bias (`qkv_bias`); `use_mean_pooling` True means the pretraining
  encoder has no final LayerNorm (a classifier then normalises the mean token, `fc_norm`);
- the decoder sees the visible tokens, then the mask tokens, each in patch order, and predicts the masked ones;
- the loss targets are the frames un-normalised with transformers' constants (ImageNet's mean and std, whatever the
  model's pixel statistics; other channel counts are taken as they come), with norm_pix_loss standardised per
  tubelet and channel: (x - mean) / (unbiased std + 1e-6).
The keywords are HuggingFace VideoMAEConfig's, so a config.json maps onto them one to one.
"""

import functools

import numpy as np

from mae_core import fields
from mae_core.masking import MaskingConvention

NAME = 'videomae'
# the smallest noise is kept, int(ratio * n) of each frame's patches masked (TubeMaskingGenerator's count)
MASKING = MaskingConvention(masks_smallest=False, rounds_masked=True)

# transformers' VideoMAEConfig fields that shape the function (its defaults: VideoMAE-B, 16 frames of 224 x 224);
# qkv_bias is transformers 4's and MCG-NJU's name for transformers 5's qv_bias
ENCODER_FIELDS = {
    'image_size': fields.size,
    'patch_size': fields.positive_int,
    'num_channels': fields.positive_int,
    'num_frames': fields.positive_int,
    'tubelet_size': fields.positive_int,
    'hidden_size': fields.positive_int,
    'num_hidden_layers': fields.positive_int,
    'num_attention_heads': fields.positive_int,
    'intermediate_size': fields.positive_int,
    'qkv_bias': fields.boolean,
    'use_mean_pooling': fields.boolean,
    'layer_norm_eps': fields.positive_float,
}
ENCODER_DEFAULTS = {
    'image_size': 224,
    'patch_size': 16,
    'num_channels': 3,
    'num_frames': 16,
    'tubelet_size': 2,
    'hidden_size': 768,
    'num_hidden_layers': 12,
    'num_attention_heads': 12,
    'intermediate_size': 3072,
    'qkv_bias': True,
    'use_mean_pooling': True,
    'layer_norm_eps': 1e-12,
}
# the decoder's, plus decoder_norm_eps (transformers' decoder norm is a plain nn.LayerNorm: 1e-5 whatever the config
# says; MCG-NJU's is 1e-6) and mask_ratio (the paper's 0.9)
MAE_FIELDS = {
    'decoder_hidden_size': fields.positive_int,
    'decoder_num_hidden_layers': fields.positive_int,
    'decoder_num_attention_heads': fields.positive_int,
    'decoder_intermediate_size': fields.positive_int,
    'decoder_norm_eps': fields.positive_float,
    'mask_ratio': fields.ratio,
    'norm_pix_loss': fields.boolean,
}
MAE_DEFAULTS = {
    'decoder_hidden_size': 384,
    'decoder_num_hidden_layers': 4,
    'decoder_num_attention_heads': 6,
    'decoder_intermediate_size': 1536,
    'decoder_norm_eps': 1e-5,
    'mask_ratio': 0.9,
    'norm_pix_loss': True,
}
IMAGE_SIZE, PATCH_SIZE, CHANNELS, NUM_FRAMES = 'image_size', 'patch_size', 'num_channels', 'num_frames'
MASKING_RATIO, NORM_PIX_LOSS = 'mask_ratio', 'norm_pix_loss'

# what transformers un-normalises 3-channel frames with before taking them as targets (its IMAGENET_DEFAULT_MEAN and
# IMAGENET_DEFAULT_STD, hard-coded in VideoMAEForPreTraining.forward)
TARGET_MEAN, TARGET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORM_PIX_EPS = 1e-6  # added to the per-tubelet standard deviation, not to the variance

# how each layout a user holds names the parts: MCG-NJU/VideoMAE's PretrainVisionTransformer (and, for an encoder
# alone, its fine-tuning VisionTransformer: no `encoder.` prefix), HuggingFace on the Hub and as transformers 4 and 5
# save it (`attention.attention.q_bias`), transformers 5 in memory (`attention.attention.query.bias`); a `_model`
# suffix is HuggingFace's VideoMAEModel (the encoder alone, no `videomae.` prefix)
LAYOUTS = ('mcg', 'hf', 'hf5')


def detect(keys):
    """(kind, layout) of a state dict of this family: kind 'MAE' or 'ViT' (an encoder alone); None if the keys are
    not this family's. A VideoMAE has no cls token and a Conv3d patch embedding; HuggingFace's q/v biases tell its
    two layouts apart (without them the two are one, 'hf')."""
    keys = set(keys)
    if 'cls_token' not in keys and {'patch_embed.proj.weight', 'blocks.0.attn.qkv.weight'} <= keys:
        return 'ViT', 'mcg'  # MCG-NJU's encoder alone
    if {'encoder.patch_embed.proj.weight', 'encoder.blocks.0.attn.qkv.weight', 'encoder_to_decoder.weight'} <= keys:
        return 'MAE', 'mcg'
    for prefix in ('videomae.', ''):
        layer = f'{prefix}encoder.layer.0.attention.attention'
        if (
            f'{prefix}embeddings.patch_embeddings.projection.weight' not in keys
            or f'{layer}.query.weight' not in keys
            or f'{prefix}embeddings.cls_token' in keys  # HuggingFace's ViTMAE
        ):
            continue
        layout = 'hf5' if f'{layer}.query.bias' in keys else 'hf'
        return ('MAE' if 'encoder_to_decoder.weight' in keys else 'ViT'), layout + ('' if prefix else '_model')
    return None


@functools.cache
def _sinusoid(num_positions, width):
    # transformers' (and MCG-NJU's) get_sinusoid_encoding_table, step for step in float64: position / 10000 **
    # (2 * (j // 2) / width), sin on the even columns, cos on the odd ones (strided, as upstream), cast once at the end
    exponents = np.array([2 * (j // 2) / width for j in range(width)])
    table = np.arange(num_positions, dtype=np.float64)[:, None] / np.power(10000, exponents)[None, :]
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    table = table.astype(np.float32)[None]  # (1, n, width)
    table.flags.writeable = False
    return table


def sinusoid_table(num_positions, width):
    """The fixed position embeddings, float32 (1, num_positions, width)."""
    return _sinusoid(int(num_positions), int(width))


def grid(image_size, patch_size, num_frames, tubelet_size):
    """(frame-groups, rows, columns) of tokens; ValueError unless the tubelets tile the video."""
    (height, width), patch = fields.pair(image_size), patch_size
    if height % patch or width % patch:
        raise ValueError(f'image_size {(height, width)} must be divisible by patch_size {patch}')
    if num_frames % tubelet_size:
        raise ValueError(f'num_frames {num_frames} must be divisible by tubelet_size {tubelet_size}')
    return num_frames // tubelet_size, height // patch, width // patch


def check_widths(widths):
    """ValueError unless each (name, width, heads) of `widths` splits evenly into heads."""
    for name, width, heads in widths:
        if width % heads:
            raise ValueError(f'{name} {width} must be divisible by its number of attention heads {heads}')

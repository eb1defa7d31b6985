"""The official MAE family (facebookresearch/mae's MaskedAutoencoderViT, the architecture of every published MAE
checkpoint: its .pth files, HuggingFace ViTMAE, timm's `.mae` weights): the facts both backends need.

Its conventions, all unlike vit-pytorch's: the patches with the SMALLEST noise are KEPT, `int(L * (1 - ratio))` of
them; a cls token goes through encoder and decoder; fixed 2-D sin-cos position embeddings (never trained) with a
zero cls row; patches laid out (p, q, c); LayerNorm eps 1e-6 in fb's factories (HuggingFace configs: 1e-12).
"""

import functools

import numpy as np

from mae_core import fields
from mae_core.masking import MaskingConvention

NAME = 'official'
MASKING = MaskingConvention(masks_smallest=False, rounds_masked=False)

# facebookresearch/mae's MaskedAutoencoderViT keywords (its defaults: the ViT-L/16 MAE), split into the encoder's
# and the decoder's, plus layer_norm_eps (fb: partial(nn.LayerNorm, eps=1e-6)), decoder_mlp_ratio (HuggingFace
# configs may size the decoder's MLP apart) and mask_ratio (fb's forward argument, 0.75)
ENCODER_FIELDS = {
    'img_size': fields.size,
    'patch_size': fields.size,
    'in_chans': fields.positive_int,
    'embed_dim': fields.positive_int,
    'depth': fields.positive_int,
    'num_heads': fields.positive_int,
    'mlp_ratio': fields.positive_float,
    'layer_norm_eps': fields.positive_float,
}
ENCODER_DEFAULTS = {
    'img_size': 224,
    'patch_size': 16,
    'in_chans': 3,
    'embed_dim': 1024,
    'depth': 24,
    'num_heads': 16,
    'mlp_ratio': 4.0,
    'layer_norm_eps': 1e-6,
}
MAE_FIELDS = {
    'decoder_embed_dim': fields.positive_int,
    'decoder_depth': fields.positive_int,
    'decoder_num_heads': fields.positive_int,
    'decoder_mlp_ratio': fields.positive_float,
    'mask_ratio': fields.ratio,
    'norm_pix_loss': fields.boolean,
}
MAE_DEFAULTS = {
    'decoder_embed_dim': 512,
    'decoder_depth': 8,
    'decoder_num_heads': 16,
    'decoder_mlp_ratio': 4.0,
    'mask_ratio': 0.75,
    'norm_pix_loss': False,
}
IMAGE_SIZE, PATCH_SIZE, CHANNELS = 'img_size', 'patch_size', 'in_chans'
MASKING_RATIO, NORM_PIX_LOSS = 'mask_ratio', 'norm_pix_loss'

# the published models: facebookresearch/mae's factories (decoder 512 wide, 8 blocks, 16 heads, eps 1e-6)
FACTORIES = {
    'mae_vit_base_patch16': dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    'mae_vit_large_patch16': dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
    'mae_vit_huge_patch14': dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16),
}

# how each layout a user holds names the parts: facebookresearch/mae (and timm), HuggingFace on the Hub
# (transformers 4), transformers 5 in memory, transformers 5's save_pretrained
LAYOUTS = ('mae', 'hf', 'hf5', 'hf5_saved')


def detect(keys):
    """(kind, layout) of a state dict of this family: kind 'MAE' or 'ViT' (an encoder alone: timm's and fb's
    `mae_pretrain_vit_*.pth`); None if the keys are not this family's."""
    keys = set(keys)
    if {'patch_embed.proj.weight', 'cls_token', 'blocks.0.attn.qkv.weight'} <= keys:
        return ('MAE' if 'decoder_embed.weight' in keys else 'ViT'), 'mae'
    for prefix in ('vit.', ''):
        # the cls token tells a ViTMAE from a VideoMAE, whose HuggingFace layout names the rest the same
        if not {f'{prefix}embeddings.patch_embeddings.projection.weight', f'{prefix}embeddings.cls_token'} <= keys:
            continue
        if f'{prefix}encoder.layer.0.attention.attention.query.weight' in keys:
            layout = 'hf5_saved' if 'decoder.decoder_encoder.layer.0.attention.attention.query.weight' in keys else 'hf'
        elif f'{prefix}layers.0.attention.q_proj.weight' in keys:
            layout = 'hf5'
        else:
            return None
        return ('MAE' if 'decoder.decoder_embed.weight' in keys else 'ViT'), layout + ('' if prefix else '_model')
    return None


@functools.cache
def _sincos(embed_dim, grid_height, grid_width):
    if embed_dim % 4:
        raise ValueError(f'sin-cos position embeddings need a width divisible by 4, got {embed_dim}')
    # facebookresearch/mae's get_2d_sincos_pos_embed, in float64 (in float32 ~40% of the entries differ):
    # np.meshgrid(grid_w, grid_h) puts the column index first, so the first half encodes the column (w), the
    # second the row (h), each as [sin | cos] over embed_dim / 4 frequencies
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 4, dtype=np.float64) / (embed_dim / 4))
    rows, columns = np.meshgrid(
        np.arange(grid_height, dtype=np.float64), np.arange(grid_width, dtype=np.float64), indexing='ij'
    )

    def one_axis(positions):
        out = np.einsum('m,d->md', positions.reshape(-1), omega)  # (h * w, embed_dim / 4)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    table = np.concatenate([one_axis(columns), one_axis(rows)], axis=1)  # (h * w, embed_dim)
    table = np.concatenate([np.zeros((1, embed_dim)), table])  # the cls token's row is zero
    table = table.astype(np.float32)[None]  # (1, 1 + h * w, embed_dim), cast once at the end
    table.flags.writeable = False
    return table


def sincos_pos_embed(embed_dim, grid_size):
    """The fixed position embeddings, float32 (1, 1 + h * w, embed_dim), for a (h, w) grid of patches."""
    height, width = fields.pair(grid_size)
    return _sincos(embed_dim, height, width)

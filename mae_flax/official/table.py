"""The official family's converter table, in every layout users hold (mae_core.official.LAYOUTS):

- 'mae': facebookresearch/mae's MaskedAutoencoderViT (and timm's ViT for the encoder): `patch_embed.proj`,
  `blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`, `norm`, `decoder_*`;
- 'hf': HuggingFace ViTMAEForPreTraining as published on the Hub and as transformers 4 saves it:
  `vit.encoder.layer.{i}.attention.attention.{query,key,value}`, ..., `decoder.decoder_layers.{i}...`;
- 'hf5': transformers 5's in-memory names: `vit.layers.{i}.attention.{q,k,v,o}_proj`, `...mlp.fc1/fc2`;
- 'hf5_saved': what transformers 5.24's save_pretrained writes: the Hub names, but the decoder's layers under
  `decoder.decoder_encoder.layer.{i}`.
A `_model` suffix is HuggingFace's ViTMAEModel (the encoder alone, no `vit.` prefix).

Rows that are not a copy or a transpose: the patch projection, a (D, C, p, q) convolution in torch and a Linear on
(p, q, c)-flattened patches here; HuggingFace's separate query, key and value, fused here as upstream's qkv; and the
fixed sin-cos tables (FixedTables: a file's own table is kept when it is not the sin-cos one, with a warning;
recomputed, or resampled if it is a file's own, for another grid size; written on export).
"""

import math
import warnings

import numpy as np

from mae_core.official import sincos_pos_embed
from mae_core.resample import resample_grid
from mae_flax.fixed_tables import is_computed
from mae_flax.official.mae import MaskedAutoencoderViT
from mae_flax.official.vit import VisionTransformer
from mae_flax.rows import fixed, fused_linear, layer_norm, linear, one

# per layout: how a block names its parts, and where the encoder's and decoder's blocks live
_HF_BLOCK = {
    'norm1': 'layernorm_before',
    'qkv': ('attention.attention.query', 'attention.attention.key', 'attention.attention.value'),
    'proj': 'attention.output.dense',
    'norm2': 'layernorm_after',
    'fc1': 'intermediate.dense',
    'fc2': 'output.dense',
}
_HF5_BLOCK = _HF_BLOCK | {
    'qkv': ('attention.q_proj', 'attention.k_proj', 'attention.v_proj'),
    'proj': 'attention.o_proj',
    'fc1': 'mlp.fc1',
    'fc2': 'mlp.fc2',
}
_FB_BLOCK = {
    'norm1': 'norm1',
    'qkv': 'attn.qkv',
    'proj': 'attn.proj',
    'norm2': 'norm2',
    'fc1': 'mlp.fc1',
    'fc2': 'mlp.fc2',
}
_NAMES = {
    # layout: (block names, encoder blocks, decoder blocks, embeddings and norms)
    'mae': (_FB_BLOCK, 'blocks', 'decoder_blocks', dict(
        cls='cls_token', pos='pos_embed', proj='patch_embed.proj', norm='norm', embed='decoder_embed',
        mask='mask_token', dec_pos='decoder_pos_embed', dec_norm='decoder_norm', pred='decoder_pred')),
    'hf': (_HF_BLOCK, 'vit.encoder.layer', 'decoder.decoder_layers', dict(
        cls='vit.embeddings.cls_token', pos='vit.embeddings.position_embeddings',
        proj='vit.embeddings.patch_embeddings.projection', norm='vit.layernorm', embed='decoder.decoder_embed',
        mask='decoder.mask_token', dec_pos='decoder.decoder_pos_embed', dec_norm='decoder.decoder_norm',
        pred='decoder.decoder_pred')),
}  # fmt: skip
_NAMES['hf5'] = (_HF5_BLOCK, 'vit.layers', 'decoder.decoder_layers', _NAMES['hf'][3])
_NAMES['hf5_saved'] = (_HF_BLOCK, 'vit.encoder.layer', 'decoder.decoder_encoder.layer', _NAMES['hf'][3])


def _conv_to_linear(patch_size, in_chans):
    """torch's patch convolution weight (D, C, p, q) <-> the Linear kernel (p * q * C, D) on (p, q, c) patches."""
    p, q = patch_size

    def to_flax(weight):
        return weight.transpose(2, 3, 1, 0).reshape(p * q * in_chans, weight.shape[0])

    def to_torch(kernel):
        return kernel.reshape(p, q, in_chans, kernel.shape[-1]).transpose(3, 2, 0, 1)

    return to_flax, to_torch


def _block(key, block, names):
    return (
        layer_norm(f'{key}.{names["norm1"]}', block.norm1)
        + (
            fused_linear([f'{key}.{name}' for name in names['qkv']], block.attn.qkv)
            if isinstance(names['qkv'], tuple)
            else linear(f'{key}.{names["qkv"]}', block.attn.qkv)
        )
        + linear(f'{key}.{names["proj"]}', block.attn.proj)
        + layer_norm(f'{key}.{names["norm2"]}', block.norm2)
        + linear(f'{key}.{names["fc1"]}', block.mlp.fc1)
        + linear(f'{key}.{names["fc2"]}', block.mlp.fc2)
    )


def classifier_table(model):
    """[Row] for a VisionTransformer (the fine-tuning model) under timm's VisionTransformer keys. Its position
    embeddings are a parameter (trained in fine-tuning, as timm's), not the MAE's constant."""
    to_flax, to_torch = _conv_to_linear(model.patch_embed.patch_size, model.in_chans)
    rows = [one('cls_token', model.cls_token), one('pos_embed', model.pos_embed)]
    rows += [
        one('patch_embed.proj.weight', model.patch_embed.proj.kernel, to_flax, to_torch),
        one('patch_embed.proj.bias', model.patch_embed.proj.bias),
    ]
    for i, block in enumerate(model.blocks):
        rows += _block(f'blocks.{i}', block, _FB_BLOCK)
    rows += layer_norm('norm', model.norm) if model.norm is not None else layer_norm('fc_norm', model.fc_norm)
    return rows + linear('head', model.head)


def table(model, layout='mae', encoder_only=False):
    """[Row] for a MaskedAutoencoderViT in `layout`; `encoder_only`: the encoder's keys alone. A VisionTransformer
    (fine-tuning's classifier) has timm's keys in every layout."""
    if isinstance(model, VisionTransformer):
        return classifier_table(model)
    model_only = layout.endswith('_model')  # HuggingFace's ViTMAEModel: the encoder, without the 'vit.' prefix
    block_names, encoder_blocks, decoder_blocks, names = _NAMES[layout.removesuffix('_model')]
    if model_only:
        names = {part: key.removeprefix('vit.') for part, key in names.items()}
        encoder_blocks = encoder_blocks.removeprefix('vit.')
    to_flax, to_torch = _conv_to_linear(model.patch_embed.patch_size, model.in_chans)
    patch_embed = model.patch_embed.proj
    encoder_only = encoder_only or model_only
    computed = model.computed_tables()
    tokens = [
        one(names['cls'], model.cls_token),
        fixed(names['pos'], model.pos_embed, computed['pos_embed'], 'sin-cos position embedding'),
    ]
    decoder_tokens = [
        one(names['mask'], model.mask_token),
        fixed(names['dec_pos'], model.decoder_pos_embed, computed['decoder_pos_embed'], 'sin-cos position embedding'),
    ]
    # torch's state_dict order: upstream registers its tokens before its modules, HuggingFace within its modules
    rows = tokens + ([] if encoder_only or layout != 'mae' else decoder_tokens)
    rows += [
        one(f'{names["proj"]}.weight', patch_embed.kernel, to_flax, to_torch),
        one(f'{names["proj"]}.bias', patch_embed.bias),
    ]
    for i, block in enumerate(model.blocks):
        rows += _block(f'{encoder_blocks}.{i}', block, block_names)
    rows += layer_norm(names['norm'], model.norm)
    if encoder_only:
        return rows
    rows += linear(names['embed'], model.decoder_embed)
    rows += [] if layout == 'mae' else decoder_tokens
    for i, block in enumerate(model.decoder_blocks):
        rows += _block(f'{decoder_blocks}.{i}', block, block_names)
    rows += layer_norm(names['dec_norm'], model.decoder_norm) + linear(names['pred'], model.decoder_pred)
    return rows


def is_mae(model):
    return isinstance(model, MaskedAutoencoderViT)


def upgrade(arrays, model):
    """Position tables of another grid size (a 224px checkpoint in a 448px model): a sin-cos table is recomputed
    for the model's grid; a file's own table (not sin-cos) and a classifier's parameter are resampled bicubically
    (facebookresearch/mae's interpolate_pos_embed). Each says so in a warning."""
    if isinstance(model, VisionTransformer):
        _resample_positions(arrays, model, 'pos_embed')
        return
    computed = model.computed_tables()
    for key, value in list(arrays.items()):
        if not key.endswith(('pos_embed', 'position_embeddings')) or value.shape[-2] == model.num_patches + 1:
            continue
        name = 'decoder_pos_embed' if key.endswith('decoder_pos_embed') else 'pos_embed'
        side = math.isqrt(value.shape[-2] - 1)
        if side * side == value.shape[-2] - 1 and is_computed(value, sincos_pos_embed(value.shape[-1], (side, side))):
            arrays[key] = computed[name]
            warnings.warn(
                f'{key!r} is for {value.shape[-2] - 1} patches, the model has {model.num_patches}: its fixed '
                'sin-cos position embeddings are computed for its own grid',
                stacklevel=3,
            )
        else:
            _resample_positions(arrays, model, key, " (the file's own fixed table, not sin-cos)")


def _resample_positions(arrays, model, key, what=''):
    table, grid = arrays.get(key), model.patch_embed.grid_size
    if table is None or table.ndim != 3 or table.shape[1] == model.num_patches + 1:
        return
    side = math.isqrt(table.shape[1] - 1)
    if side * side != table.shape[1] - 1:
        return  # not a square grid: the shape check reports it
    patches = resample_grid(np.asarray(table[0, 1:]).reshape(side, side, -1), grid).reshape(1, -1, table.shape[-1])
    arrays[key] = np.concatenate([np.asarray(table[:, :1]), patches], axis=1)
    warnings.warn(
        f'{key!r}{what} holds a {side}x{side} grid of positions, the model has {grid[0]}x{grid[1]}: resampled '
        'bicubically',
        stacklevel=4,
    )

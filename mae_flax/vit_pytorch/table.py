"""The vit-pytorch family's converter table: every vit-pytorch / mae_torch state-dict key and the mae_flax
parameter that holds it, in torch's state_dict order.

vit-pytorch's MAE registers the encoder's patch embedding twice (`encoder.to_patch_embedding.{1,2,3}` and
`patch_to_emb.{0,1,2}`): both keys map to the same Flax parameters, and both are written back.
"""

import math
import warnings

import numpy as np

from mae_core.resample import resample_grid
from mae_core.vit_pytorch import upgrade_legacy
from mae_flax.rows import layer_norm, linear, one
from mae_flax.vit_pytorch.mae import MAE


def _patch_embedding(key, embedding, first_index):
    i = first_index
    return (
        layer_norm(f'{key}.{i}', embedding.patch_norm)
        + linear(f'{key}.{i + 1}', embedding.linear)
        + layer_norm(f'{key}.{i + 2}', embedding.norm)
    )


def _transformer(key, transformer):
    rows = layer_norm(f'{key}.norm', transformer.norm)
    for i, layer in enumerate(transformer.layers):
        attn, ff, block = layer[0], layer[1], f'{key}.layers.{i}'
        rows += layer_norm(f'{block}.0.norm', attn.norm) + linear(f'{block}.0.to_qkv', attn.to_qkv)
        if attn.to_out is not None:
            rows += linear(f'{block}.0.to_out.0', attn.to_out)
        rows += layer_norm(f'{block}.1.net.0', ff.norm)
        rows += linear(f'{block}.1.net.1', ff.hidden) + linear(f'{block}.1.net.4', ff.out)
    return rows


def _vit(prefix, vit):
    rows = [one(f'{prefix}cls_token', vit.cls_token), one(f'{prefix}pos_embedding', vit.pos_embedding)]
    rows += _patch_embedding(f'{prefix}to_patch_embedding', vit.to_patch_embedding, first_index=1)
    rows += _transformer(f'{prefix}transformer', vit.transformer)
    if vit.mlp_head is not None:
        rows += linear(f'{prefix}mlp_head', vit.mlp_head)
    return rows


def table(model, layout='vit_pytorch', encoder_only=False):
    """[Row] for a mae_flax ViT or MAE of this family; `encoder_only`: an MAE's encoder, keyed as a ViT."""
    if not isinstance(model, MAE):
        return _vit('', model)
    if encoder_only:
        return _vit('', model.encoder)
    rows = [one('mask_token', model.mask_token)]
    rows += _vit('encoder.', model.encoder)
    rows += _patch_embedding('patch_to_emb', model.encoder.to_patch_embedding, first_index=0)
    if model.enc_to_dec is not None:
        rows += linear('enc_to_dec', model.enc_to_dec)
    rows += _transformer('decoder', model.decoder)
    rows += [one('decoder_pos_emb.weight', model.decoder_pos_emb)]
    rows += linear('to_pixels', model.to_pixels)
    return rows


def is_mae(model):
    return isinstance(model, MAE)


def upgrade(arrays, model):
    """Rewrites, in place and before loading, what an older or other-sized checkpoint holds: legacy (pre-2-D)
    vit-pytorch position tables, and learned position rows of another grid size, resampled bicubically to the
    model's grid (timm's resample_abs_pos_embed; said in a warning)."""
    vit = model.encoder if isinstance(model, MAE) else model
    prefix = 'encoder.' if 'encoder.pos_embedding' in arrays else ''
    upgrade_legacy(arrays, prefix, vit.pool)
    grid = (vit.image_size[0] // vit.patch_size[0], vit.image_size[1] // vit.patch_size[1])
    # pos_embedding: the cls row first, then patch i; decoder_pos_emb: patch i at row i, the spare cls row last
    tables = [(f'{prefix}pos_embedding', True)] + ([('decoder_pos_emb.weight', False)] if prefix else [])
    for key, cls_first in tables:
        table = arrays.get(key)
        if table is None or table.ndim != 2 or table.shape[0] == grid[0] * grid[1] + vit.num_cls_tokens:
            continue
        side = math.isqrt(table.shape[0] - vit.num_cls_tokens)
        if side * side != table.shape[0] - vit.num_cls_tokens:
            continue  # not a square grid of this model's kind: the shape check reports it
        cls_rows = table[: vit.num_cls_tokens] if cls_first else table[side * side :]
        patch_rows = table[vit.num_cls_tokens :] if cls_first else table[: side * side]
        resampled = resample_grid(patch_rows.reshape(side, side, -1), grid).reshape(grid[0] * grid[1], -1)
        arrays[key] = np.concatenate([cls_rows, resampled] if cls_first else [resampled, cls_rows])
        warnings.warn(
            f'{key!r} holds a {side}x{side} grid of positions, the model has {grid[0]}x{grid[1]}: resampled bicubically',
            stacklevel=3,
        )

"""The VideoMAE family's converter table, in every layout users hold (mae_core.videomae.LAYOUTS):

- 'mcg': MCG-NJU/VideoMAE's PretrainVisionTransformer (mae_torch's twin): `encoder.patch_embed.proj`,
  `encoder.blocks.{i}.{norm1,attn.q_bias,attn.v_bias,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`, `encoder.norm`,
  `decoder.blocks.{i}...`, `decoder.norm`, `decoder.head`, `encoder_to_decoder`, `mask_token`; an encoder alone has
  its keys without `encoder.` (MCG-NJU's fine-tuning model, and what upstream's fine-tuning strips);
- 'hf': HuggingFace VideoMAEForPreTraining as published on the Hub and as transformers 4 and 5 save it:
  `videomae.embeddings.patch_embeddings.projection`, `videomae.encoder.layer.{i}.attention.attention.{query,key,value,
  q_bias,v_bias}`, ..., `videomae.layernorm`, `decoder.decoder_layers.{i}...`, `decoder.norm`, `decoder.head`;
- 'hf5': transformers 5's in-memory names: the q and v biases as `attention.attention.{query,value}.bias`.
A `_model` suffix is HuggingFace's VideoMAEModel (the encoder alone, no `videomae.` prefix).

Rows that are not a copy or a transpose: the tubelet projection, a (D, C, t, p, q) Conv3d in torch and a Linear on
(t, p, q, c)-flattened tubelets here; and HuggingFace's separate query, key and value, fused here as upstream's qkv.
The fixed sinusoid tables are in no layout's state dict (upstream's are plain tensors).
"""

import warnings

from mae_flax.rows import fused_linear, layer_norm, linear, one
from mae_flax.videomae.mae import VideoMAE
from mae_flax.videomae.vit import VisionTransformer

# per layout: how a block names its parts
_MCG_BLOCK = {
    'norm1': 'norm1',
    'q_bias': 'attn.q_bias',
    'v_bias': 'attn.v_bias',
    'qkv': 'attn.qkv',
    'proj': 'attn.proj',
    'norm2': 'norm2',
    'fc1': 'mlp.fc1',
    'fc2': 'mlp.fc2',
}
_HF_BLOCK = {
    'norm1': 'layernorm_before',
    'q_bias': 'attention.attention.q_bias',
    'v_bias': 'attention.attention.v_bias',
    'qkv': ('attention.attention.query', 'attention.attention.key', 'attention.attention.value'),
    'proj': 'attention.output.dense',
    'norm2': 'layernorm_after',
    'fc1': 'intermediate.dense',
    'fc2': 'output.dense',
}
_HF5_BLOCK = _HF_BLOCK | {'q_bias': 'attention.attention.query.bias', 'v_bias': 'attention.attention.value.bias'}
_HF_NAMES = dict(
    proj='videomae.embeddings.patch_embeddings.projection', blocks='videomae.encoder.layer', norm='videomae.layernorm',
    decoder_blocks='decoder.decoder_layers',
)  # fmt: skip
_NAMES = {
    # layout: (block names, where the encoder's parts and the decoder's blocks live)
    'mcg': (_MCG_BLOCK, dict(proj='encoder.patch_embed.proj', blocks='encoder.blocks', norm='encoder.norm',
                             decoder_blocks='decoder.blocks')),
    'hf': (_HF_BLOCK, _HF_NAMES),
    'hf5': (_HF5_BLOCK, _HF_NAMES),
}  # fmt: skip


def _conv3d_to_linear(patch_embed, channels):
    """torch's Conv3d weight (D, C, t, p, q) <-> the Linear kernel (t * p * q * C, D) on (t, p, q, c) tubelets."""
    tubelet, patch = patch_embed.tubelet_size, patch_embed.patch_size

    def to_flax(weight):
        return weight.transpose(2, 3, 4, 1, 0).reshape(-1, weight.shape[0])

    def to_torch(kernel):
        return kernel.reshape(tubelet, patch, patch, channels, kernel.shape[-1]).transpose(4, 3, 0, 1, 2)

    return to_flax, to_torch


def _patch_embed(key, model):
    to_flax, to_torch = _conv3d_to_linear(model.patch_embed, model.num_channels)
    proj = model.patch_embed.proj
    return [one(f'{key}.weight', proj.kernel, to_flax, to_torch), one(f'{key}.bias', proj.bias)]


def _block(key, block, names):
    """A block's rows in its layout's state_dict order (torch's: a module's own parameters before its children's)."""
    attention = []
    if block.attn.q_bias is not None:
        attention += [
            one(f'{key}.{names["q_bias"]}', block.attn.q_bias),
            one(f'{key}.{names["v_bias"]}', block.attn.v_bias),
        ]
    qkv = names['qkv']
    if isinstance(qkv, tuple):
        attention += fused_linear([f'{key}.{name}' for name in qkv], block.attn.qkv)
    else:
        attention += linear(f'{key}.{qkv}', block.attn.qkv)
    attention += linear(f'{key}.{names["proj"]}', block.attn.proj)
    norm1, norm2 = (
        layer_norm(f'{key}.{names["norm1"]}', block.norm1),
        layer_norm(f'{key}.{names["norm2"]}', block.norm2),
    )
    mlp = linear(f'{key}.{names["fc1"]}', block.mlp.fc1) + linear(f'{key}.{names["fc2"]}', block.mlp.fc2)
    if names is _MCG_BLOCK:
        return norm1 + attention + norm2 + mlp
    return attention + mlp + norm1 + norm2  # HuggingFace registers its layer norms last


def classifier_table(model):
    """[Row] for a VisionTransformer (the fine-tuning model) under MCG-NJU's fine-tuning keys."""
    rows = _patch_embed('patch_embed.proj', model)
    for i, block in enumerate(model.blocks):
        rows += _block(f'blocks.{i}', block, _MCG_BLOCK)
    rows += layer_norm('norm', model.norm) if model.norm is not None else layer_norm('fc_norm', model.fc_norm)
    return rows + linear('head', model.head)


def table(model, layout='mcg', encoder_only=False):
    """[Row] for a VideoMAE in `layout`; `encoder_only`: the encoder's keys alone. A VisionTransformer (the
    fine-tuning classifier) has MCG-NJU's fine-tuning keys in every layout."""
    if isinstance(model, VisionTransformer):
        return classifier_table(model)
    model_only = layout.endswith('_model')  # HuggingFace's VideoMAEModel: the encoder, without 'videomae.'
    block_names, names = _NAMES[layout.removesuffix('_model')]
    encoder_only = encoder_only or model_only
    if model_only or (encoder_only and layout == 'mcg'):  # MCG-NJU's encoder alone has no 'encoder.' either
        prefix = 'encoder.' if layout == 'mcg' else 'videomae.'
        names = {part: key.removeprefix(prefix) for part, key in names.items()}
    encoder = model.encoder
    rows = [] if encoder_only else [one('mask_token', model.mask_token)]
    rows += _patch_embed(names['proj'], encoder)
    for i, block in enumerate(encoder.blocks):
        rows += _block(f'{names["blocks"]}.{i}', block, block_names)
    if encoder.norm is not None:
        rows += layer_norm(names['norm'], encoder.norm)
    if encoder_only:
        return rows
    decoder = []
    for i, block in enumerate(model.decoder.blocks):
        decoder += _block(f'{names["decoder_blocks"]}.{i}', block, block_names)
    decoder += layer_norm('decoder.norm', model.decoder.norm) + linear('decoder.head', model.decoder.head)
    encoder_to_decoder = linear('encoder_to_decoder', model.encoder_to_decoder)
    # torch's state_dict order: upstream registers encoder_to_decoder after its decoder, HuggingFace before
    return rows + (decoder + encoder_to_decoder if layout == 'mcg' else encoder_to_decoder + decoder)


def is_mae(model):
    return isinstance(model, VideoMAE)


# a video classifier's own keys (transformers' VideoMAEForVideoClassification, MCG-NJU's fine-tuning model)
CLASSIFIER_KEYS = ('classifier.', 'fc_norm.', 'head.')


def upgrade(arrays, model):
    """A video classifier's file read into a VideoMAE: its encoder loads, its head (and the fc_norm of its mean
    pooling) is left out, with a warning. Nothing else to rewrite: no layout stores the fixed position tables, and
    upstream's keys never changed."""
    if not is_mae(model):
        return
    head = sorted(key for key in arrays if key.startswith(CLASSIFIER_KEYS))
    for key in head:
        del arrays[key]
    if head:
        warnings.warn(
            f'loaded the encoder of a video classifier and left its head out ({", ".join(head)}): '
            'mae-finetune trains a new one',
            stacklevel=3,
        )

"""A vit-pytorch family ModelSpec from a state dict: what the tensor shapes say, and what not.

The shapes fix dim, depth, mlp_dim, num_classes, pool (cls_token has 1 row with 'cls', 0 with 'mean'), the
decoder's dim and depth, patch_dim = channels * p1 * p2 (the patch embedding's input) and num_patches (the
pos_embedding's rows, less the cls row). They do not fix:
- channels, and how patch_dim and num_patches split into heights and widths: assumed 3 channels, square patches
  and a square grid of them, unless given;
- heads vs dim_head: to_qkv is (3 * heads * dim_head, dim) either way, and a wrong split computes a different
  function from the same weights, so it is never guessed. Only a missing to_out (the identity exactly when
  heads == 1 and dim_head == dim) settles it;
- masking_ratio and norm_pix_loss, which have no weights: assumed vit-pytorch's 0.75 and off, unless given;
- pool for legacy checkpoints (3-D pos_embedding), which kept a cls token for both pools: assumed 'cls';
- layer_norm_eps: assumed torch's 1e-5;
- the pixel statistics the model was trained with: assumed none (pixels in [0, 1] as they are), unless given.
"""

import math

from mae_core import vit_pytorch
from mae_core.errors import UsageError
from mae_core.fields import compact, pair
from mae_core.spec import ModelSpec
from mae_flax.shape_inference import INFERRED, Fields, read_image_size


def _sizes(fields, patch_dim, num_patches):
    """channels, patch_size and image_size from patch_dim = channels * p1 * p2 and num_patches = grid cells."""
    channels = fields.choose('channels', 3)
    if channels < 1 or patch_dim % channels:
        raise UsageError(
            f'channels = {channels} does not divide the patch embedding input {patch_dim}: pass --channels'
        )
    if 'patch_size' in fields.given:
        patch = pair(compact(fields.given['patch_size'][0]))
        if patch[0] * patch[1] * channels != patch_dim:
            raise UsageError(
                f'patch_size {patch} with {channels} channels gives patches of {patch[0] * patch[1] * channels} '
                f'values, the weights take {patch_dim}: check --patch_size and --channels'
            )
        fields.read('patch_size', compact(patch))
    else:
        side = math.isqrt(patch_dim // channels)
        if side * side * channels != patch_dim:
            raise UsageError(
                f'the patch embedding takes {patch_dim} values, not {channels} channels * p * p for a square patch: '
                'pass --patch_size (and --channels)'
            )
        fields.read('patch_size', side, f'{INFERRED}, square assumed')
    patch = pair(fields.values['patch_size'])

    read_image_size(fields, 'image_size', patch, num_patches, 'pos_embedding')


def _depth(arrays, prefix):
    depth = 0
    while f'{prefix}layers.{depth}.0.to_qkv.weight' in arrays:
        depth += 1
    return depth


def _heads(fields, arrays, prefix, dim, heads_field, dim_head_field):
    """heads and dim_head of a transformer's attention: from to_out's absence, or one given value."""
    qkv = arrays.get(f'{prefix}layers.0.0.to_qkv.weight')
    if qkv is None:  # depth 0: no attention to size
        fields.choose(heads_field, 8)
        fields.choose(dim_head_field, 64)
        return
    inner = qkv.shape[0] // 3
    if f'{prefix}layers.0.0.to_out.0.weight' not in arrays:
        # to_out is the identity exactly when heads == 1 and dim_head == dim
        fields.read(heads_field, 1)
        fields.read(dim_head_field, dim)
        return
    for known, other in ((heads_field, dim_head_field), (dim_head_field, heads_field)):
        if known in fields.given:
            value = fields.given[known][0]
            if value < 1 or inner % value:
                raise UsageError(f'--{known} {value} does not divide heads * dim_head = {inner}, the attention width')
            fields.read(known, value)
            fields.read(other, inner // value)
            return
    raise UsageError(
        f'cannot tell {heads_field} from {dim_head_field}: the weights only fix heads * dim_head = {inner} '
        f'({"decoder" if prefix == "decoder." else "encoder"} attention); pass --{heads_field} or --{dim_head_field}'
    )


def infer(arrays, given, name):
    """(ModelSpec, sources) for a vit-pytorch / mae_torch state dict `arrays` ({key: array}) that
    mae_core.vit_pytorch.detect recognised; `given` is {field: (value, source)} from flags or a JSON.

    sources says for each field whether it was inferred, given (and checked against the shapes) or assumed.
    """
    kind, _ = vit_pytorch.detect(arrays)
    prefix = 'encoder.' if kind == 'MAE' else ''
    if kind == 'ViT':
        decoder_flags = [field for field in vit_pytorch.MAE_FIELDS if field in given]
        if decoder_flags:
            raise UsageError(f'{name} is a ViT without an MAE decoder: {decoder_flags[0]} does not apply')
    fields = Fields(given)

    pos_embedding, cls_token = arrays[f'{prefix}pos_embedding'], arrays[f'{prefix}cls_token']
    dim = fields.read('dim', pos_embedding.shape[-1])
    if pos_embedding.ndim == 3:  # legacy (1, n + 1, d): a cls row whatever the pool
        fields.choose('pool', 'cls')
        num_patches = pos_embedding.shape[1] - 1
    else:
        if cls_token.shape[0] not in (0, 1):
            raise UsageError(f'{name}: cls_token has {cls_token.shape[0]} rows, expected 1 (pool cls) or 0 (mean)')
        fields.read('pool', 'cls' if cls_token.shape[0] else 'mean')
        num_patches = pos_embedding.shape[0] - cls_token.shape[0]
    _sizes(fields, arrays[f'{prefix}to_patch_embedding.2.weight'].shape[-1], num_patches)

    transformer = f'{prefix}transformer.'
    depth = fields.read('depth', _depth(arrays, transformer))
    if depth:
        fields.read('mlp_dim', arrays[f'{transformer}layers.0.1.net.1.weight'].shape[0])
    else:
        fields.choose('mlp_dim', 4 * dim)
    _heads(fields, arrays, transformer, dim, 'heads', 'dim_head')
    head = arrays.get(f'{prefix}mlp_head.weight')
    fields.read('num_classes', 0 if head is None else head.shape[0])
    fields.choose('layer_norm_eps', 1e-5)
    encoder = {field: fields.values[field] for field in vit_pytorch.ENCODER_FIELDS}

    mae = None
    if kind == 'MAE':
        decoder_dim = fields.read('decoder_dim', arrays['mask_token'].shape[0])
        fields.read('decoder_depth', _depth(arrays, 'decoder.'))
        _heads(fields, arrays, 'decoder.', decoder_dim, 'decoder_heads', 'decoder_dim_head')
        fields.choose('masking_ratio', 0.75)
        fields.choose('norm_pix_loss', False)
        mae = {field: fields.values[field] for field in vit_pytorch.MAE_FIELDS}
    channels = fields.values['channels']
    mean = fields.choose('pixel_mean', (0.0,) * channels)
    std = fields.choose('pixel_std', (1.0,) * channels)
    spec = ModelSpec(vit_pytorch.NAME, encoder, mae, pixel_mean=mean, pixel_std=std)
    return spec, fields.sources

"""The official MAE family in Flax: facebookresearch/mae's MaskedAutoencoderViT, the architecture of every
published MAE checkpoint, loadable from facebookresearch/mae, timm and HuggingFace layouts and exported back."""

from mae_core import official as facts
from mae_flax.official import hf, table
from mae_flax.official.infer import infer
from mae_flax.official.mae import (
    MaskedAutoencoderViT,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
)
from mae_flax.official.vit import VisionTransformer


def build(spec, *, rngs, dtype=None, scan_layers=False, remat='none'):
    """The MaskedAutoencoderViT a ModelSpec of this family describes."""
    return MaskedAutoencoderViT(
        **spec.encoder, **(spec.mae or {}), dtype=dtype, scan_layers=scan_layers, remat=remat, rngs=rngs
    )


def build_classifier(spec, *, num_classes, pool, drop_path_rate=0.0, head_norm=False, head_std=0.0, **kwargs):
    """facebookresearch/mae's fine-tuning model for the encoder a ModelSpec describes: its VisionTransformer, pool
    'avg' (fine-tuning's fc_norm of the mean patch token) or 'token' (linear probing's cls token after norm)."""
    encoder = spec.encoder
    return VisionTransformer(
        img_size=encoder['img_size'],
        patch_size=encoder['patch_size'],
        in_chans=encoder['in_chans'],
        num_classes=num_classes,
        embed_dim=encoder['embed_dim'],
        depth=encoder['depth'],
        num_heads=encoder['num_heads'],
        mlp_ratio=encoder['mlp_ratio'],
        global_pool=pool,
        layer_norm_eps=encoder['layer_norm_eps'],
        drop_path_rate=drop_path_rate,
        head_norm=head_norm,
        head_std=head_std,
        **kwargs,
    )


def build_classifier_torch(spec, *, num_classes, pool):
    """The torch twin (timm's VisionTransformer keys) of `build_classifier`'s model."""
    import mae_torch.official

    encoder = dict(spec.encoder)
    eps = encoder.pop('layer_norm_eps')
    return mae_torch.official.VisionTransformer(
        **encoder, num_classes=num_classes, global_pool=pool, layer_norm_eps=eps
    )


# the classifier: its pools (the first is fine-tuning's default, the second linear probing's), the torch name of its
# head, and what an encoder's checkpoint does not hold (initialised fresh: the head, fine-tuning's fc_norm)
POOLS = ('avg', 'token')
HEAD = 'head'


def default_pool(spec, mode):
    """facebookresearch/mae's: the mean patch token to fine-tune, the cls token to probe."""
    return POOLS[0] if mode == 'finetune' else POOLS[1]


FRESH = ('head.', 'fc_norm.')


def depth(classifier):
    """The number of blocks of a classifier of this family (the layers of layer-wise lr decay)."""
    return len(classifier.blocks)


def layer_id(names, depth):
    """facebookresearch/mae's layer-wise lr decay layers (util/lr_decay.py): the embeddings 0, block i i + 1,
    everything after the blocks (norm, fc_norm, head) depth + 1; `names` is a parameter's per-block path."""
    if names[0] in ('cls_token', 'pos_embed', 'patch_embed'):
        return 0
    if names[0] == 'blocks':
        return int(names[1]) + 1
    return depth + 1


def build_torch(spec):
    import mae_torch.official

    return mae_torch.official.build(spec)


def decays(path):
    """timm's add_weight_decay, as facebookresearch/mae's pretraining uses it: no decay for 1-D parameters (biases,
    LayerNorm scales); every other parameter, the (1, 1, D) cls and mask tokens included, is decayed. The fixed
    position embeddings are not parameters at all."""
    return getattr(path[-1], 'key', None) not in ('bias', 'scale')


def encoder_spec(spec):
    """This family keeps one class: an encoder's file is read into a MaskedAutoencoderViT whose decoder the
    description still sizes (freshly initialised)."""
    return spec


__all__ = [
    'FRESH',
    'HEAD',
    'POOLS',
    'MaskedAutoencoderViT',
    'VisionTransformer',
    'build',
    'build_classifier',
    'build_classifier_torch',
    'build_torch',
    'decays',
    'default_pool',
    'encoder_spec',
    'facts',
    'hf',
    'infer',
    'layer_id',
    'mae_vit_base_patch16',
    'mae_vit_huge_patch14',
    'mae_vit_large_patch16',
    'table',
]

"""The VideoMAE family in Flax: MCG-NJU/VideoMAE's pretraining model, the same function as HuggingFace transformers'
VideoMAEForPreTraining, loadable from MCG-NJU's and HuggingFace's layouts and exported back; and its fine-tuning
classifier (transformers' VideoMAEForVideoClassification)."""

from mae_core import videomae as facts
from mae_flax.videomae import hf, table
from mae_flax.videomae.infer import infer
from mae_flax.videomae.mae import VideoMAE
from mae_flax.videomae.tubes import patchify, unpatchify
from mae_flax.videomae.vit import POOLS, VisionTransformer


def build(spec, *, rngs, dtype=None, scan_layers=False, remat='none'):
    """The VideoMAE a ModelSpec of this family describes (for an encoder's spec, with the default decoder)."""
    return VideoMAE(**spec.encoder, **(spec.mae or {}), dtype=dtype, scan_layers=scan_layers, remat=remat, rngs=rngs)


def _classifier_encoder(spec):
    """The classifier's encoder keywords: the spec's, its pooling set by the classifier's `pool` instead."""
    return {field: value for field, value in spec.encoder.items() if field != 'use_mean_pooling'}


def build_classifier(spec, *, num_classes, pool, drop_path_rate=0.0, head_norm=False, head_std=0.0, **kwargs):
    """MCG-NJU's fine-tuning model for the encoder a ModelSpec describes: pool 'mean' (fine-tuning's fc_norm of the
    mean token) or 'first' (the first token after the final norm, transformers' use_mean_pooling=False)."""
    return VisionTransformer(
        **_classifier_encoder(spec),
        num_classes=num_classes,
        pool=pool,
        drop_path_rate=drop_path_rate,
        head_norm=head_norm,
        head_std=head_std,
        **kwargs,
    )


def build_classifier_torch(spec, *, num_classes, pool):
    """The torch twin (MCG-NJU's fine-tuning keys) of `build_classifier`'s model."""
    import mae_torch.videomae

    return mae_torch.videomae.VisionTransformer(**_classifier_encoder(spec), num_classes=num_classes, pool=pool)


# the classifier: the torch name of its head, and what an encoder's checkpoint does not hold (initialised fresh)
HEAD = 'head'
FRESH = ('head.', 'fc_norm.')


def default_pool(spec, mode):
    """MCG-NJU's fine-tuning (use_mean_pooling): the normalised mean token, to fine-tune and to probe."""
    return POOLS[0]


def depth(classifier):
    """The number of blocks of a classifier of this family (the layers of layer-wise lr decay)."""
    return len(classifier.blocks)


def layer_id(names, depth):
    """MCG-NJU's layer-wise lr decay layers (optim_factory.get_layer_id_for_vit): the tubelet embedding 0, block i
    i + 1, everything after the blocks (norm, fc_norm, head) depth + 1; `names` is a parameter's per-block path."""
    if names[0] == 'patch_embed':
        return 0
    if names[0] == 'blocks':
        return int(names[1]) + 1
    return depth + 1


def build_torch(spec):
    import mae_torch.videomae

    return mae_torch.videomae.build(spec)


def decays(path):
    """MCG-NJU's pretraining rule (optim_factory.get_parameter_groups): no decay for 1-D parameters (biases, the q and
    v biases, LayerNorm scales) nor for the mask token (its no_weight_decay list); every other parameter is decayed.
    The fixed position tables are not parameters at all."""
    return getattr(path[-1], 'key', None) not in ('bias', 'scale', 'q_bias', 'v_bias', 'mask_token')


def encoder_spec(spec):
    """This family keeps one class: an encoder's file is read into a VideoMAE whose decoder the description still
    sizes (freshly initialised)."""
    return spec


__all__ = [
    'FRESH',
    'HEAD',
    'POOLS',
    'VideoMAE',
    'VisionTransformer',
    'build',
    'build_classifier',
    'build_classifier_torch',
    'build_torch',
    'decays',
    'default_pool',
    'depth',
    'encoder_spec',
    'facts',
    'hf',
    'infer',
    'layer_id',
    'patchify',
    'table',
    'unpatchify',
]

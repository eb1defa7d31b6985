"""The vit-pytorch family in Flax: vit-pytorch's ViT and MAE, the same function and parameters as mae_torch's."""

from mae_core import vit_pytorch as facts
from mae_core.errors import UsageError
from mae_flax.layers import head_linear
from mae_flax.vit_pytorch import table
from mae_flax.vit_pytorch.infer import infer
from mae_flax.vit_pytorch.mae import MAE, reconstruction_loss
from mae_flax.vit_pytorch.vit import ViT


def build(spec, *, rngs, dtype=None, scan_layers=False, remat='none'):
    """The mae_flax model a ModelSpec of this family describes: an MAE, or a ViT when spec.mae is None."""
    encoder = ViT(**spec.encoder, dtype=dtype, scan_layers=scan_layers, remat=remat, rngs=rngs)
    return encoder if spec.mae is None else MAE(encoder=encoder, **spec.mae, rngs=rngs)


def build_classifier(spec, *, num_classes, pool, drop_path_rate=0.0, head_norm=False, head_std=0.0, rngs, **kwargs):
    """The ViT a ModelSpec's encoder describes with a `num_classes` head (vit-pytorch's own mlp_head path: the final
    LayerNorm, then the cls token or the mean token, then the Linear), its head as `layers.head_linear`. The pooling is the
    encoder's own (`pool` must be it: a cls-token model and a mean-pool one do not hold the same parameters)."""
    if pool != spec.encoder['pool']:
        raise UsageError(
            f"a vit-pytorch ViT pools as it was built: this encoder's pool is {spec.encoder['pool']!r}, got {pool!r}"
        )
    vit = ViT(
        **(spec.encoder | {'num_classes': num_classes}),
        drop_path_rate=drop_path_rate,
        head_norm=head_norm,
        rngs=rngs,
        **kwargs,
    )
    vit.mlp_head = head_linear(vit.mlp_head.in_features, num_classes, head_std, dtype=kwargs.get('dtype'), rngs=rngs)
    return vit


def build_classifier_torch(spec, *, num_classes, pool):
    """The torch twin (vit-pytorch's ViT keys) of `build_classifier`'s model."""
    import mae_torch.vit_pytorch

    return mae_torch.vit_pytorch.build(spec.replace(mae=None).with_fields('encoder', num_classes=num_classes))


POOLS = ('cls', 'mean')
HEAD = 'mlp_head'


def default_pool(spec, mode):
    """The encoder's own, whatever the mode: a cls-token ViT and a mean-pool one hold different parameters."""
    return spec.encoder['pool']


FRESH = ('mlp_head.',)


def depth(classifier):
    """The number of blocks of a classifier of this family (the layers of layer-wise lr decay)."""
    return len(classifier.transformer.layers)


def layer_id(names, depth):
    """Layer-wise lr decay layers as facebookresearch/mae's: the embeddings (patch embedding, cls token, positions)
    0, block i i + 1, the final LayerNorm and the head depth + 1."""
    if names[0] in ('cls_token', 'pos_embedding', 'to_patch_embedding'):
        return 0
    if names[:2] == ('transformer', 'layers'):
        return int(names[2]) + 1
    return depth + 1


def build_torch(spec):
    import mae_torch.vit_pytorch

    return mae_torch.vit_pytorch.build(spec)


def decays(path):
    """Weight decay applies to Linear kernels only: not to biases, LayerNorm scales and biases, position
    embeddings, the cls token or the mask token (vit-pytorch's MAE recipe as mae-train runs it)."""
    return getattr(path[-1], 'key', None) == 'kernel'


def encoder_spec(spec):
    """An encoder's file is a ViT's: no MAE keywords."""
    return spec.replace(mae=None)


__all__ = [
    'FRESH',
    'HEAD',
    'MAE',
    'POOLS',
    'ViT',
    'build',
    'build_classifier',
    'build_classifier_torch',
    'build_torch',
    'decays',
    'default_pool',
    'encoder_spec',
    'facts',
    'infer',
    'layer_id',
    'reconstruction_loss',
    'table',
]

"""Benchmark model sizes, and the model FLOPs of one training step counted from the config."""

import dataclasses

from mae_core.spec import PAPER_DECODER, ModelSpec, decode_variant


def mae_spec(variant, image_size, decoder, **encoder):
    """A vit-pytorch family MAE description from a size variant ('B/16'); pool='mean', since vit-pytorch's own
    MAE crashes with a cls token (and the MAE never uses it)."""
    encoder = decode_variant(variant) | dict(image_size=image_size, num_classes=0, pool='mean') | encoder
    return ModelSpec('vit_pytorch', encoder, dict(masking_ratio=0.75) | decoder)


@dataclasses.dataclass(frozen=True)
class Preset:
    """An MAE description and the batch it is timed with."""

    name: str
    batch_size: int
    spec: ModelSpec

    def __getattr__(self, name):
        """The model's keywords (dim, depth, decoder_dim, ...) and sizes, read from its description."""
        spec = self.__dict__['spec']
        if name in ('num_patches', 'num_masked', 'channels', 'masking_ratio'):
            return getattr(spec, name)
        if name in ('image_size', 'patch_size'):
            height, width = getattr(spec, name)
            if height != width:
                raise ValueError(f'{self.name}: the benchmarks take square {name}s, got {(height, width)}')
            return height
        for part in (spec.encoder, spec.mae):
            if name in part:
                return part[name]
        raise AttributeError(name)

    def vit_pytorch_model(self, package):
        """The MAE built with vit-pytorch's own classes (it lacks layer_norm_eps and norm_pix_loss, left at their
        defaults: 1e-5, off)."""
        encoder = {name: value for name, value in self.spec.encoder.items() if name != 'layer_norm_eps'}
        mae = {name: value for name, value in self.spec.mae.items() if name != 'norm_pix_loss'}
        return package.mae.MAE(encoder=package.vit.ViT(**encoder), **mae)


SMALL_DECODER = dict(decoder_dim=128, decoder_depth=2, decoder_heads=4, decoder_dim_head=32)
PRESETS = {
    # CPU: ViT-Ti widths (4 blocks) on 32px images with 4px patches (64 patches, 16 visible)
    'tiny': Preset('tiny', 32, mae_spec('Ti/4', 32, SMALL_DECODER, depth=4)),
    # GPU/TPU: the MAE paper's models at 224px with its 8-layer, 512-wide decoder (16 heads of 32)
    'vit_b16': Preset('vit_b16', 256, mae_spec('B/16', 224, PAPER_DECODER)),
    'vit_l16': Preset('vit_l16', 128, mae_spec('L/16', 224, PAPER_DECODER)),
    # for tests: a step of a few milliseconds
    'test': Preset(
        'test',
        4,
        mae_spec(
            'tiny/4',
            16,
            dict(decoder_dim=32, decoder_depth=1, decoder_heads=2, decoder_dim_head=16),
            dim=32,
            depth=1,
            heads=2,
            dim_head=16,
            mlp_dim=64,
        ),
    ),
}


def _transformer_flops(tokens, dim, depth, heads, dim_head, mlp_dim):
    """Forward matmul FLOPs (2 per multiply-add) of `depth` pre-norm blocks over `tokens` tokens."""
    inner = heads * dim_head
    qkv = 2 * tokens * dim * 3 * inner
    attention = 2 * 2 * tokens * tokens * inner  # q k^T and attn v
    out = 2 * tokens * inner * dim
    mlp = 2 * 2 * tokens * dim * mlp_dim
    return depth * (qkv + attention + out + mlp)


def forward_flops_per_image(preset):
    """Matmul FLOPs of one forward pass: patch embedding on all patches, encoder on the visible tokens, decoder on
    all tokens, pixel head on the masked ones. Norms, softmax, GELU and the optimizer are not counted."""
    p = preset
    patch_dim = p.channels * p.patch_size**2
    visible = p.num_patches - p.num_masked
    patch_embedding = 2 * p.num_patches * patch_dim * p.dim
    encoder = _transformer_flops(visible, p.dim, p.depth, p.heads, p.dim_head, p.mlp_dim)
    enc_to_dec = 2 * visible * p.dim * p.decoder_dim if p.dim != p.decoder_dim else 0
    decoder = _transformer_flops(
        p.num_patches, p.decoder_dim, p.decoder_depth, p.decoder_heads, p.decoder_dim_head, 4 * p.decoder_dim
    )
    to_pixels = 2 * p.num_masked * p.decoder_dim * patch_dim
    return patch_embedding + encoder + enc_to_dec + decoder + to_pixels


def train_flops_per_image(preset):
    """Forward + backward: the backward costs two forwards (gradients of activations and of weights)."""
    return 3 * forward_flops_per_image(preset)

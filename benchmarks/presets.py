"""Benchmark model sizes, and the model FLOPs of one training step counted from the config."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Preset:
    """An MAE and the batch it is timed with; every model field is a vit-pytorch keyword."""

    name: str
    batch_size: int
    image_size: int
    patch_size: int
    dim: int
    depth: int
    heads: int
    dim_head: int
    mlp_dim: int
    decoder_dim: int
    decoder_depth: int
    decoder_heads: int
    decoder_dim_head: int
    masking_ratio: float = 0.75
    channels: int = 3

    @property
    def vit_kwargs(self):
        # pool='mean': vit-pytorch's MAE crashes with a cls token, and the MAE never uses it
        names = ('image_size', 'patch_size', 'dim', 'depth', 'heads', 'dim_head', 'mlp_dim', 'channels')
        return {name: getattr(self, name) for name in names} | {'num_classes': 0, 'pool': 'mean'}

    @property
    def mae_kwargs(self):
        names = ('decoder_dim', 'decoder_depth', 'decoder_heads', 'decoder_dim_head', 'masking_ratio')
        return {name: getattr(self, name) for name in names}

    @property
    def num_patches(self):
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_masked(self):
        return int(self.masking_ratio * self.num_patches)


PRESETS = {
    # CPU: ViT-Ti widths on 32px images with 4px patches (64 patches, 16 visible)
    'tiny': Preset('tiny', 32, 32, 4, 192, 4, 3, 64, 768, 128, 2, 4, 32),
    # GPU/TPU: the MAE paper's models at 224px with its 8-layer, 512-wide decoder (16 heads of 32)
    'vit_b16': Preset('vit_b16', 256, 224, 16, 768, 12, 12, 64, 3072, 512, 8, 16, 32),
    'vit_l16': Preset('vit_l16', 128, 224, 16, 1024, 24, 16, 64, 4096, 512, 8, 16, 32),
    # for tests: a step of a few milliseconds
    'test': Preset('test', 4, 16, 4, 32, 1, 2, 16, 64, 32, 1, 2, 16),
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

"""Benchmark model sizes, and the model FLOPs of one training step counted from the config."""

import dataclasses

from mae_core import videomae
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


def video_spec(**encoder):
    """A video-family (VideoMAE) description: transformers' VideoMAEConfig defaults (VideoMAE-B, 16 frames of
    224px in tubelets of 2 x 16 x 16, a 4-block 384-wide decoder, 90% tube masking) with `encoder` changed."""
    return ModelSpec(videomae.NAME, videomae.ENCODER_DEFAULTS | encoder, dict(videomae.MAE_DEFAULTS))


SMALL_DECODER = dict(decoder_dim=128, decoder_depth=2, decoder_heads=4, decoder_dim_head=32)
PRESETS = {
    # CPU: ViT-Ti widths (4 blocks) on 32px images with 4px patches (64 patches, 16 visible)
    'tiny': Preset('tiny', 32, mae_spec('Ti/4', 32, SMALL_DECODER, depth=4)),
    # GPU/TPU: the MAE paper's models at 224px with its 8-layer, 512-wide decoder (16 heads of 32)
    'vit_b16': Preset('vit_b16', 256, mae_spec('B/16', 224, PAPER_DECODER)),
    'vit_l16': Preset('vit_l16', 128, mae_spec('L/16', 224, PAPER_DECODER)),
    # VideoMAE-B as the paper pretrains it on Kinetics-400: 16 frames of 224px, 1568 tokens, 156 visible
    'videomae_b16': Preset('videomae_b16', 32, video_spec()),
    # CPU: the video_tiny config's model, 8 frames of 32px (256 tokens, 26 visible)
    'video_tiny': Preset(
        'video_tiny',
        16,
        video_spec(
            image_size=32,
            patch_size=4,
            num_frames=8,
            hidden_size=96,
            num_hidden_layers=3,
            num_attention_heads=3,
            intermediate_size=192,
        ).with_fields(  # fmt: skip
            'mae',
            decoder_hidden_size=64,
            decoder_num_hidden_layers=2,
            decoder_num_attention_heads=4,
            decoder_intermediate_size=128,
        ),  # fmt: skip
    ),
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


def video_forward_flops(spec):
    """Matmul FLOPs of one VideoMAE forward pass on a clip: the tubelet embedding on every tubelet, the encoder on
    the visible ones, encoder_to_decoder, the decoder on all, the pixel head on the masked ones."""
    encoder, mae = spec.encoder, spec.mae
    tubelet_dim = encoder['tubelet_size'] * encoder['patch_size'] ** 2 * spec.channels
    tokens = spec.num_frames // encoder['tubelet_size'] * spec.num_patches
    masked = tokens // spec.num_patches * spec.num_masked
    visible = tokens - masked
    width, decoder_width = encoder['hidden_size'], mae['decoder_hidden_size']
    heads, decoder_heads = encoder['num_attention_heads'], mae['decoder_num_attention_heads']
    blocks = _transformer_flops(
        visible, width, encoder['num_hidden_layers'], heads, width // heads, encoder['intermediate_size']
    )
    decoder = _transformer_flops(
        tokens, decoder_width, mae['decoder_num_hidden_layers'], decoder_heads, decoder_width // decoder_heads,
        mae['decoder_intermediate_size'],
    )  # fmt: skip
    embedding, head = 2 * tokens * tubelet_dim * width, 2 * masked * decoder_width * tubelet_dim
    return embedding + blocks + 2 * visible * width * decoder_width + decoder + head


def train_flops_per_image(preset):
    """Forward + backward (per image, or per clip for a video model): the backward costs two forwards (gradients
    of activations and of weights)."""
    if preset.spec.num_frames is not None:
        return 3 * video_forward_flops(preset.spec)
    return 3 * forward_flops_per_image(preset)

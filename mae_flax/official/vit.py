"""facebookresearch/mae's fine-tuning model (`models_vit.VisionTransformer`, timm's VisionTransformer with its
`global_pool` option) in Flax NNX: the MAE's encoder with a classification head, images (N, H, W, C).

As upstream: the same patch embedding, cls token and blocks as MaskedAutoencoderViT; the position embeddings are
a trained parameter here (timm's), initialised with the MAE's fixed sin-cos table; `global_pool='avg'` (fine-tuning's
default) averages the patch tokens and normalises the average (`fc_norm`, and no final `norm`), `'token'` takes the
cls token after the final `norm` (linear probing's). Also: per-sample drop path, linear in depth up to
`drop_path_rate` (timm's rule), `head_norm` (linear probing's BatchNorm without affine parameters before the head,
eps 1e-6), a head initialised at zero (`head_std` 0) or from a truncated normal. Its parameters carry timm's VisionTransformer keys (mae_flax.official.table).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from mae_core.official import sincos_pos_embed
from mae_flax.layers import drop_path_rate as block_rate
from mae_flax.layers import head_batch_norm, head_linear, torch_layer_norm
from mae_flax.official.mae import Block, PatchEmbed, check_sizes
from mae_flax.patches import check_image, patchify
from mae_flax.stack import check_remat, make_layers, run_layers

GLOBAL_POOLS = ('avg', 'token')


class VisionTransformer(nnx.Module):
    family = 'official'

    def __init__(
        self,
        img_size=224,
        patch_size=16,
        in_chans=3,
        num_classes=1000,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        mlp_ratio=4.0,
        *,
        global_pool='avg',
        layer_norm_eps=1e-6,
        drop_path_rate=0.0,
        head_norm=False,
        head_std=0.0,
        dtype=None,
        scan_layers=False,
        remat='none',
        rngs,
    ):
        check_sizes(img_size, patch_size, (('', embed_dim, num_heads),))
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f'global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}')
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes must be a positive integer, got {num_classes!r}')
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate!r}')
        self.in_chans, self.embed_dim, self.num_classes, self.dtype = in_chans, embed_dim, num_classes, dtype
        self.global_pool, self.scan_layers, self.remat = global_pool, scan_layers, check_remat(remat)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, dtype=dtype, rngs=rngs)
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nnx.Param(jax.random.normal(rngs.params(), (1, 1, embed_dim)) * 0.02)
        self.pos_embed = nnx.Param(jnp.asarray(sincos_pos_embed(embed_dim, self.patch_embed.grid_size)))

        def block(rngs, index):
            rate = block_rate(drop_path_rate, index, depth) if drop_path_rate > 0 else None
            return Block(embed_dim, num_heads, mlp_ratio, layer_norm_eps, drop_path=rate, dtype=dtype, rngs=rngs)

        self.blocks = make_layers(block, depth, scan_layers=scan_layers, rngs=rngs, indexed=True)
        norm = torch_layer_norm(embed_dim, eps=layer_norm_eps, dtype=dtype, rngs=rngs)
        self.norm, self.fc_norm = (None, norm) if global_pool == 'avg' else (norm, None)
        self.head_norm = head_batch_norm(embed_dim, rngs=rngs) if head_norm else None
        self.head = head_linear(embed_dim, num_classes, head_std, dtype=dtype, rngs=rngs)

    def features(self, imgs):
        """(N, D): the pooled, normalised representation the head sees (before head_norm)."""
        check_image(imgs, channels=self.in_chans, image_size=self.patch_embed.img_size)
        dtype = self.dtype or imgs.dtype
        tokens = self.patch_embed(patchify(imgs, self.patch_embed.patch_size))  # (N, L, D)
        pos_embed = self.pos_embed[...].astype(dtype)
        cls = jnp.broadcast_to(self.cls_token[...].astype(dtype) + pos_embed[:, :1], (len(imgs), 1, self.embed_dim))
        tokens = jnp.concatenate((cls, tokens + pos_embed[:, 1:]), axis=1)  # (N, 1 + L, D)
        tokens = run_layers(self.blocks, tokens, remat=self.remat)
        if self.global_pool == 'avg':
            return self.fc_norm(tokens[:, 1:].mean(axis=1))
        return self.norm(tokens)[:, 0]

    def head_logits(self, features):
        """The head on (N, D) features: head_norm (if any), then the Linear; float32 logits."""
        if self.head_norm is not None:
            features = self.head_norm(features.astype(jnp.float32))
        return self.head(features).astype(jnp.float32)

    def __call__(self, imgs):
        return self.head_logits(self.features(imgs))

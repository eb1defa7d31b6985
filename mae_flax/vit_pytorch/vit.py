"""vit-pytorch's ViT in Flax NNX: the same function and parameters as mae_torch.ViT, images (b, h, w, c).

Numerics follow torch: exact GELU, LayerNorm eps `layer_norm_eps` (1e-5) with the two-pass variance, softmax
scale dim_head ** -0.5. Parameters are float32; `dtype` is the compute dtype (e.g. jnp.bfloat16). `scan_layers` and `remat` choose how
the blocks run (mae_flax.stack), not what they compute.
"""

import jax
import jax.numpy as jnp
from einops import rearrange, repeat
from flax import nnx

from mae_core.fields import pair
from mae_flax.layers import DropPath, gelu, head_batch_norm, make_dropout, torch_layer_norm, torch_linear
from mae_flax.layers import drop_path_rate as block_rate
from mae_flax.patches import check_image, patchify
from mae_flax.stack import check_remat, make_layers, run_layers


class FeedForward(nnx.Module):
    def __init__(self, dim, hidden_dim, dropout_rate=0.0, *, eps=1e-5, dtype=None, rngs):
        self.norm = torch_layer_norm(dim, eps=eps, dtype=dtype, rngs=rngs)
        self.hidden = torch_linear(dim, hidden_dim, dtype=dtype, rngs=rngs)
        self.out = torch_linear(hidden_dim, dim, dtype=dtype, rngs=rngs)
        self.dropout = make_dropout(dropout_rate, rngs=rngs)

    def __call__(self, x):
        x = gelu(self.hidden(self.norm(x)))
        return self.dropout(self.out(self.dropout(x)))


class Attention(nnx.Module):
    def __init__(self, dim, heads=8, dim_head=64, dropout_rate=0.0, *, eps=1e-5, dtype=None, rngs):
        inner_dim = dim_head * heads
        project_out = not (heads == 1 and dim_head == dim)

        self.heads = heads
        self.scale = dim_head**-0.5

        self.norm = torch_layer_norm(dim, eps=eps, dtype=dtype, rngs=rngs)
        self.dropout = make_dropout(dropout_rate, rngs=rngs)
        self.to_qkv = torch_linear(dim, inner_dim * 3, use_bias=False, dtype=dtype, rngs=rngs)
        self.to_out = torch_linear(inner_dim, dim, dtype=dtype, rngs=rngs) if project_out else None

    def __call__(self, x):
        x = self.norm(x)

        q, k, v = (rearrange(t, 'b n (h d) -> b n h d', h=self.heads) for t in jnp.split(self.to_qkv(x), 3, axis=-1))

        if self.dropout.rate > 0 and not self.dropout.deterministic:
            # dropout on the attention weights, as vit-pytorch; the fused kernel has none
            dots = jnp.einsum('bqhd,bkhd->bhqk', q, k) * self.scale
            attn = self.dropout(jax.nn.softmax(dots.astype(jnp.float32), axis=-1).astype(v.dtype))
            out = jnp.einsum('bhqk,bkhd->bqhd', attn, v)
        else:
            out = jax.nn.dot_product_attention(q, k, v, scale=self.scale)  # (b, n, h, d); cuDNN where available
        out = rearrange(out, 'b n h d -> b n (h d)')
        return self.dropout(self.to_out(out)) if self.to_out is not None else out


def _block(layer, x):
    attn, ff = layer[0], layer[1]
    if len(layer) == 2:
        x = attn(x) + x
        return ff(x) + x
    drop_path = layer[2]  # fine-tuning's stochastic depth (not vit-pytorch's; training only, no weights)
    x = drop_path(attn(x)) + x
    return drop_path(ff(x)) + x


class Transformer(nnx.Module):
    """vit-pytorch's Transformer: `layers` of [Attention, FeedForward] pairs (scanned with `scan_layers`, see
    mae_flax.stack), then a LayerNorm. With `drop_path_rate`, each pair also holds a DropPath (rates linear in
    depth, timm's rule), which fine-tuning uses; vit-pytorch has none."""

    def __init__(
        self,
        dim,
        depth,
        heads,
        dim_head,
        mlp_dim,
        dropout_rate=0.0,
        *,
        eps=1e-5,
        drop_path_rate=0.0,
        dtype=None,
        scan_layers=False,
        remat='none',
        rngs,
    ):
        self.remat = check_remat(remat)
        self.norm = torch_layer_norm(dim, eps=eps, dtype=dtype, rngs=rngs)

        def make_layer(rngs, index):
            layer = [
                Attention(dim, heads, dim_head, dropout_rate, eps=eps, dtype=dtype, rngs=rngs),
                FeedForward(dim, mlp_dim, dropout_rate, eps=eps, dtype=dtype, rngs=rngs),
            ]
            if drop_path_rate > 0:
                layer.append(DropPath(block_rate(drop_path_rate, index, depth), rngs=rngs))
            return nnx.List(layer)

        self.layers = make_layers(make_layer, depth, scan_layers=scan_layers, rngs=rngs, indexed=True)

    def __call__(self, x):
        return self.norm(run_layers(self.layers, x, _block, self.remat))


class PatchEmbedding(nnx.Module):
    """vit-pytorch's `to_patch_embedding` after the Rearrange: LayerNorm, Linear, LayerNorm."""

    def __init__(self, patch_dim, dim, *, eps=1e-5, dtype=None, rngs):
        self.patch_norm = torch_layer_norm(patch_dim, eps=eps, dtype=dtype, rngs=rngs)
        self.linear = torch_linear(patch_dim, dim, dtype=dtype, rngs=rngs)
        self.norm = torch_layer_norm(dim, eps=eps, dtype=dtype, rngs=rngs)

    def __call__(self, patches):
        return self.norm(self.linear(self.patch_norm(patches)))


class ViT(nnx.Module):
    family = 'vit_pytorch'

    def __init__(
        self,
        *,
        image_size,
        patch_size,
        num_classes,
        dim,
        depth,
        heads,
        mlp_dim,
        pool='cls',
        channels=3,
        dim_head=64,
        dropout=0.0,
        emb_dropout=0.0,
        layer_norm_eps=1e-5,
        drop_path_rate=0.0,
        head_norm=False,
        dtype=None,
        scan_layers=False,
        remat='none',
        rngs,
    ):
        self.image_size = image_height, image_width = pair(image_size)
        self.patch_size = patch_height, patch_width = pair(patch_size)

        if image_height % patch_height or image_width % patch_width:
            raise ValueError(f'image_size {self.image_size} must be divisible by patch_size {self.patch_size}')
        if pool not in {'cls', 'mean'}:
            raise ValueError(f"pool must be 'cls' (cls token) or 'mean' (mean pooling), got {pool!r}")

        num_patches = (image_height // patch_height) * (image_width // patch_width)
        patch_dim = channels * patch_height * patch_width
        self.num_cls_tokens = 1 if pool == 'cls' else 0

        self.channels = channels
        self.layer_norm_eps = layer_norm_eps
        self.dtype = dtype
        self.to_patch_embedding = PatchEmbedding(patch_dim, dim, eps=layer_norm_eps, dtype=dtype, rngs=rngs)

        self.cls_token = nnx.Param(jax.random.normal(rngs.params(), (self.num_cls_tokens, dim)))
        self.pos_embedding = nnx.Param(jax.random.normal(rngs.params(), (num_patches + self.num_cls_tokens, dim)))

        self.dropout = make_dropout(emb_dropout, rngs=rngs)

        self.scan_layers, self.remat = scan_layers, remat
        self.transformer = Transformer(
            dim,
            depth,
            heads,
            dim_head,
            mlp_dim,
            dropout,
            eps=layer_norm_eps,
            drop_path_rate=drop_path_rate,
            dtype=dtype,
            scan_layers=scan_layers,
            remat=remat,
            rngs=rngs,
        )

        self.pool = pool
        self.mlp_head = torch_linear(dim, num_classes, dtype=dtype, rngs=rngs) if num_classes > 0 else None
        # linear probing's BatchNorm without affine parameters before the head (facebookresearch/mae's recipe)
        self.head_norm = head_batch_norm(dim, rngs=rngs) if head_norm and num_classes > 0 else None

    def __call__(self, img):
        x = self._tokens(img)
        if self.mlp_head is None:
            return x
        return self.head_logits(self.pooled(x))

    def _tokens(self, img):
        check_image(img, channels=self.channels, image_size=self.image_size)
        batch = img.shape[0]
        x = self.to_patch_embedding(patchify(img, self.patch_size))  # (b, n, d)

        cls_tokens = repeat(self.cls_token[...].astype(x.dtype), '... d -> b ... d', b=batch)
        x = jnp.concatenate((cls_tokens, x), axis=1)  # (b, num_cls + n, d)

        x = x + self.pos_embedding[: x.shape[1]].astype(x.dtype)
        x = self.dropout(x)

        return self.transformer(x)

    def pooled(self, tokens):
        """(b, d): the tokens the transformer gave, pooled as the head sees them."""
        return tokens.mean(axis=1) if self.pool == 'mean' else tokens[:, 0]

    def features(self, img):
        """(b, d): what the classification head sees (before head_norm)."""
        return self.pooled(self._tokens(img))

    def head_logits(self, features):
        if self.head_norm is not None:
            features = self.head_norm(features.astype(jnp.float32))
        return self.mlp_head(features)

"""facebookresearch/mae's MaskedAutoencoderViT in Flax NNX: the same function as mae_torch's (and upstream's),
images (N, H, W, C).

The patch projection, a p x p convolution with stride p upstream, is the same function as a Linear on the
(p, q, c)-flattened patches, which is what runs here (one matmul). The fixed sin-cos position embeddings are
FixedTables (mae_flax.fixed_tables), not parameters: outside the optimizer and weight decay, as upstream's
requires_grad=False; computed in float64 (mae_core.official), or a checkpoint's own (transformers' zeros). Numerics as torch: exact GELU, LayerNorm eps `layer_norm_eps` with the two-pass variance.
"""

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from mae_core.contract import MAEOutput
from mae_core.fields import pair
from mae_core.official import FACTORIES, MASKING, sincos_pos_embed
from mae_flax.fixed_tables import FixedTable
from mae_flax.layers import DropPath, gelu, torch_layer_norm, xavier_linear
from mae_flax.masking import check_noise, permute_tokens, random_masking
from mae_flax.patches import check_image, patchify, unpatchify
from mae_flax.stack import check_remat, make_layers, run_layers


class PatchEmbed(nnx.Module):
    def __init__(self, img_size, patch_size, in_chans, embed_dim, *, dtype=None, rngs):
        self.img_size, self.patch_size = pair(img_size), pair(patch_size)
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = xavier_linear(self.patch_size[0] * self.patch_size[1] * in_chans, embed_dim, dtype=dtype, rngs=rngs)

    def __call__(self, patches):
        return self.proj(patches)  # (N, L, p*q*C) -> (N, L, D)


class Attention(nnx.Module):
    def __init__(self, dim, num_heads, *, dtype=None, rngs):
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = xavier_linear(dim, dim * 3, dtype=dtype, rngs=rngs)
        self.proj = xavier_linear(dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        q, k, v = rearrange(self.qkv(x), 'b n (three h d) -> three b n h d', three=3, h=self.num_heads)
        out = jax.nn.dot_product_attention(q, k, v, scale=self.scale)  # (b, n, h, d); cuDNN where available
        return self.proj(rearrange(out, 'b n h d -> b n (h d)'))


class Mlp(nnx.Module):
    def __init__(self, dim, hidden_dim, *, dtype=None, rngs):
        self.fc1 = xavier_linear(dim, hidden_dim, dtype=dtype, rngs=rngs)
        self.fc2 = xavier_linear(hidden_dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.fc2(gelu(self.fc1(x)))


class Block(nnx.Module):
    """timm's pre-norm block; `drop_path` (a rate, None for none) drops each residual branch per sample."""

    def __init__(self, dim, num_heads, mlp_ratio, eps, *, drop_path=None, dtype=None, rngs):
        self.norm1 = torch_layer_norm(dim, eps=eps, dtype=dtype, rngs=rngs)
        self.attn = Attention(dim, num_heads, dtype=dtype, rngs=rngs)
        self.norm2 = torch_layer_norm(dim, eps=eps, dtype=dtype, rngs=rngs)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dtype=dtype, rngs=rngs)
        self.drop_path = None if drop_path is None else DropPath(drop_path, rngs=rngs)

    def __call__(self, x):
        if self.drop_path is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def check_sizes(img_size, patch_size, widths):
    """ValueError unless the patches tile the image and each (prefix, width, heads) of `widths` splits evenly."""
    image, patch = pair(img_size), pair(patch_size)
    if image[0] % patch[0] or image[1] % patch[1]:
        raise ValueError(f'img_size {image} must be divisible by patch_size {patch}')
    for name, width, heads in widths:
        if width % heads:
            raise ValueError(f'{name}embed_dim {width} must be divisible by {name}num_heads {heads}')


def forward_loss(target, pred, mask, norm_pix_loss):
    """Mean over the removed patches of the per-patch MSE, in float32; norm_pix_loss standardises each target
    patch (unbiased variance, + 1e-6) first."""
    target, pred = target.astype(jnp.float32), pred.astype(jnp.float32)
    if norm_pix_loss:
        mean, var = target.mean(axis=-1, keepdims=True), target.var(axis=-1, keepdims=True, ddof=1)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = jnp.square(pred - target).mean(axis=-1)  # (N, L), mean loss per patch
    return (loss * mask).sum() / mask.sum()


class MaskedAutoencoderViT(nnx.Module):
    family = 'official'

    def __init__(
        self,
        img_size=224,
        patch_size=16,
        in_chans=3,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        decoder_embed_dim=512,
        decoder_depth=8,
        decoder_num_heads=16,
        mlp_ratio=4.0,
        norm_pix_loss=False,
        *,
        layer_norm_eps=1e-6,
        decoder_mlp_ratio=None,
        mask_ratio=0.75,
        dtype=None,
        scan_layers=False,
        remat='none',
        rngs,
    ):
        check_sizes(
            img_size, patch_size, (('', embed_dim, num_heads), ('decoder_', decoder_embed_dim, decoder_num_heads))
        )
        patch = pair(patch_size)
        self.in_chans, self.norm_pix_loss, self.mask_ratio, self.dtype = in_chans, norm_pix_loss, mask_ratio, dtype
        self.embed_dim, self.decoder_embed_dim = embed_dim, decoder_embed_dim
        self.scan_layers, self.remat = scan_layers, check_remat(remat)
        decoder_mlp_ratio = mlp_ratio if decoder_mlp_ratio is None else decoder_mlp_ratio
        normal = jax.nn.initializers.normal(0.02)

        # encoder
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, dtype=dtype, rngs=rngs)
        self.num_patches = self.patch_embed.num_patches
        self.num_masked = MASKING.check(mask_ratio, self.num_patches, 'mask_ratio')
        self.cls_token = nnx.Param(normal(rngs.params(), (1, 1, embed_dim)))
        self.blocks = make_layers(
            lambda rngs: Block(embed_dim, num_heads, mlp_ratio, layer_norm_eps, dtype=dtype, rngs=rngs),
            depth,
            scan_layers=scan_layers,
            rngs=rngs,
        )
        self.norm = torch_layer_norm(embed_dim, eps=layer_norm_eps, dtype=dtype, rngs=rngs)

        # decoder
        self.decoder_embed = xavier_linear(embed_dim, decoder_embed_dim, dtype=dtype, rngs=rngs)
        self.mask_token = nnx.Param(normal(rngs.params(), (1, 1, decoder_embed_dim)))
        self.decoder_blocks = make_layers(
            lambda rngs: Block(
                decoder_embed_dim, decoder_num_heads, decoder_mlp_ratio, layer_norm_eps, dtype=dtype, rngs=rngs
            ),
            decoder_depth,
            scan_layers=scan_layers,
            rngs=rngs,
        )
        self.decoder_norm = torch_layer_norm(decoder_embed_dim, eps=layer_norm_eps, dtype=dtype, rngs=rngs)
        self.decoder_pred = xavier_linear(decoder_embed_dim, patch[0] * patch[1] * in_chans, dtype=dtype, rngs=rngs)
        # the masking noise when none is passed: the 'noise' stream, or 'default'
        self.noise_rng = rngs.noise.fork()
        # the fixed sin-cos tables: not parameters; a checkpoint holding other tables replaces them (fixed_tables)
        for name, table in self.computed_tables().items():
            setattr(self, name, FixedTable(jnp.asarray(table)))

    def computed_tables(self):
        """The fixed tables this model computes: (1, 1 + L, D) float32 sin-cos position embeddings."""
        grid = self.patch_embed.grid_size
        return dict(
            pos_embed=sincos_pos_embed(self.embed_dim, grid),
            decoder_pos_embed=sincos_pos_embed(self.decoder_embed_dim, grid),
        )

    def patchify(self, imgs):
        return patchify(imgs, self.patch_embed.patch_size)

    def unpatchify(self, x):
        return unpatchify(x, self.patch_embed.img_size, self.patch_embed.patch_size, self.in_chans)

    def __call__(self, imgs, *, mask_ratio=None, noise=None, return_outputs=False):
        """(loss, pred (N, L, p*q*C) for every patch, mask (N, L) with 1 = removed), as upstream; MAEOutput with
        return_outputs=True. `mask_ratio` (a Python float) defaults to the model's."""
        check_image(imgs, channels=self.in_chans, image_size=self.patch_embed.img_size)
        mask_ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        num_masked = (
            self.num_masked
            if mask_ratio == self.mask_ratio
            else MASKING.check(mask_ratio, self.num_patches, 'mask_ratio')
        )
        batch, num_patches = imgs.shape[0], self.num_patches
        dtype = self.dtype or imgs.dtype

        # embed patches, add positions (the cls row is the cls token's)
        target = self.patchify(imgs)  # (N, L, p*q*C)
        tokens = self.patch_embed(target)  # (N, L, D)
        patch_embedding = tokens
        pos_embed = self.pos_embed[...].astype(dtype)
        tokens = tokens + pos_embed[:, 1:, :]

        # the smallest noise is kept
        if noise is None:
            noise = jax.random.uniform(self.noise_rng(), (batch, num_patches))
        check_noise(noise, batch, num_patches)
        masked_indices, kept_indices = random_masking(noise, num_masked, MASKING)  # (N, L - keep), (N, keep)
        # every reordering is a full permutation (then a slice): the backward pass gathers through the inverse
        # permutation, with no scatter and no sort (permute_tokens)
        keep = num_patches - num_masked
        order = jnp.concatenate((kept_indices, masked_indices), axis=1)  # (N, L): noise order, kept first
        restore = jnp.argsort(order, axis=-1)  # (N, L): patch i's place in that order
        tokens = permute_tokens(tokens, order, restore)[:, :keep]  # (N, keep, D)
        cls_tokens = jnp.broadcast_to(
            self.cls_token[...].astype(dtype) + pos_embed[:, :1, :], (batch, 1, self.embed_dim)
        )
        tokens = jnp.concatenate((cls_tokens, tokens), axis=1)  # (N, 1 + keep, D)
        tokens = run_layers(self.blocks, tokens, remat=self.remat)
        encoded_tokens = self.norm(tokens)

        # decoder: mask tokens appended, unshuffled to patch order by a gather, positions added
        decoder_tokens = self.decoder_embed(encoded_tokens)  # (N, 1 + keep, Dd)
        mask_tokens = jnp.broadcast_to(
            self.mask_token[...].astype(decoder_tokens.dtype), (batch, num_masked, self.decoder_embed_dim)
        )
        shuffled = jnp.concatenate((decoder_tokens[:, 1:], mask_tokens), axis=1)  # (N, L, Dd) in noise order
        decoder_input = jnp.concatenate((decoder_tokens[:, :1], permute_tokens(shuffled, restore, order)), axis=1)
        decoder_input = decoder_input + self.decoder_pos_embed[...].astype(decoder_input.dtype)  # (N, 1 + L, Dd)
        tokens = decoder_input
        tokens = run_layers(self.decoder_blocks, tokens, remat=self.remat)
        decoded_tokens = self.decoder_norm(tokens)
        pred = self.decoder_pred(decoded_tokens)[:, 1:, :]  # (N, L, p*q*C), the cls token removed

        mask = (restore >= keep).astype(jnp.float32)  # (N, L), 1 = removed: its place in the order is past the kept
        loss = forward_loss(target, pred, mask, self.norm_pix_loss)
        if not return_outputs:
            return loss, pred, mask
        intermediates = dict(
            patches=target,
            patch_embedding=patch_embedding,
            encoded_tokens=encoded_tokens,
            decoder_input=decoder_input,
            decoded_tokens=decoded_tokens,
        )
        masked_patches = permute_tokens(target, order, restore)[:, keep:]
        pred_pixel_values = permute_tokens(pred, order, restore)[:, keep:]
        return MAEOutput(loss, pred_pixel_values, masked_patches, masked_indices, kept_indices, intermediates)


def _factory(name):
    def build(*, rngs, **kwargs):
        return MaskedAutoencoderViT(
            **FACTORIES[name],
            decoder_embed_dim=512,
            decoder_depth=8,
            decoder_num_heads=16,
            mlp_ratio=4,
            layer_norm_eps=1e-6,
            rngs=rngs,
            **kwargs,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"facebookresearch/mae's {name}: {FACTORIES[name]}, the 8-block 512-wide decoder, LayerNorm eps 1e-6."
    )
    return build


mae_vit_base_patch16 = _factory('mae_vit_base_patch16')
mae_vit_large_patch16 = _factory('mae_vit_large_patch16')
mae_vit_huge_patch14 = _factory('mae_vit_huge_patch14')

"""MCG-NJU/VideoMAE's PretrainVisionTransformer in Flax NNX: the same function as HuggingFace transformers'
VideoMAEForPreTraining (and mae_torch's twin), videos (b, t, h, w, c).

The tubelet projection, a Conv3d with kernel and stride (tubelet, p, p) upstream, is the same function as a Linear on
the (t, p, q, c)-flattened tubelets, which is what runs here (one matmul). The fixed sinusoid position table is a
numpy constant (mae_core.videomae), not a parameter: outside the optimizer and weight decay, as upstream's plain
tensor. Numerics as torch: exact GELU, LayerNorm with the two-pass variance, eps `layer_norm_eps` in the blocks (and
the encoder's final norm) and `decoder_norm_eps` in the decoder's final norm (transformers: torch's default 1e-5).
The tubelets, the tube masks and the loss targets are mae_flax.videomae.tubes.
"""

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange
from flax import nnx

from mae_core.contract import MAEOutput
from mae_core.fields import pair
from mae_core.videomae import (
    MASKING,
    check_widths,
    grid,
    sinusoid_table,
)
from mae_flax.layers import DropPath, torch_layer_norm, torch_linear, xavier_linear
from mae_flax.masking import check_noise, gather_tokens, permute_tokens
from mae_flax.official.mae import Mlp
from mae_flax.stack import check_remat, make_layers, run_layers
from mae_flax.videomae.tubes import check_bool_masked_pos, check_video, loss_targets, patchify, tube_mask, unpatchify


class PatchEmbed(nnx.Module):
    """The tubelet embedding: upstream's Conv3d as a Linear on flattened tubelets, with the Conv3d's default init."""

    def __init__(self, image_size, patch_size, num_channels, num_frames, tubelet_size, hidden_size, *, dtype, rngs):
        self.image_size, self.patch_size, self.tubelet_size = pair(image_size), patch_size, tubelet_size
        self.grid_size = grid(image_size, patch_size, num_frames, tubelet_size)  # (t, h, w) tubelets
        in_features = tubelet_size * patch_size * patch_size * num_channels
        self.proj = torch_linear(in_features, hidden_size, dtype=dtype, rngs=rngs)

    def __call__(self, patches):
        return self.proj(patches)  # (b, n, pt*p*q*c) -> (b, n, D)


class Attention(nnx.Module):
    """MCG-NJU's attention: one qkv matmul without bias, then the q and v biases added (k's is zero)."""

    def __init__(self, dim, num_heads, qkv_bias, *, dtype=None, rngs):
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = xavier_linear(dim, dim * 3, use_bias=False, dtype=dtype, rngs=rngs)
        self.q_bias = nnx.Param(jnp.zeros((dim,))) if qkv_bias else None
        self.v_bias = nnx.Param(jnp.zeros((dim,))) if qkv_bias else None
        self.proj = xavier_linear(dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        qkv = self.qkv(x)  # (b, n, 3 * D)
        if self.q_bias is not None:
            q_bias, v_bias = self.q_bias[...], self.v_bias[...]
            qkv = qkv + jnp.concatenate((q_bias, jnp.zeros_like(q_bias), v_bias)).astype(qkv.dtype)
        q, k, v = rearrange(qkv, 'b n (three h d) -> three b n h d', three=3, h=self.num_heads)
        out = jax.nn.dot_product_attention(q, k, v, scale=self.scale)  # (b, n, h, d)
        return self.proj(rearrange(out, 'b n h d -> b n (h d)'))


class Block(nnx.Module):
    """The pre-norm block (transformers' VideoMAELayer); `drop_path` (a rate, None for none) drops each residual
    branch per sample."""

    def __init__(self, dim, num_heads, intermediate_size, qkv_bias, eps, *, drop_path=None, dtype=None, rngs):
        self.norm1 = torch_layer_norm(dim, eps=eps, dtype=dtype, rngs=rngs)
        self.attn = Attention(dim, num_heads, qkv_bias, dtype=dtype, rngs=rngs)
        self.norm2 = torch_layer_norm(dim, eps=eps, dtype=dtype, rngs=rngs)
        self.mlp = Mlp(dim, intermediate_size, dtype=dtype, rngs=rngs)
        self.drop_path = None if drop_path is None else DropPath(drop_path, rngs=rngs)

    def __call__(self, x):
        if self.drop_path is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Encoder(nnx.Module):
    """The tubelet embedding, the blocks and (unless use_mean_pooling) the final norm: MCG-NJU's
    PretrainVisionTransformerEncoder, transformers' VideoMAEModel. `block_rate(index)` gives block i's drop path
    rate (None: none)."""

    def __init__(
        self,
        *,
        image_size,
        patch_size,
        num_channels,
        num_frames,
        tubelet_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        qkv_bias,
        use_mean_pooling,
        layer_norm_eps,
        block_rate=None,
        dtype=None,
        scan_layers=False,
        remat='none',
        rngs,
    ):
        check_widths((('hidden_size', hidden_size, num_attention_heads),))
        self.num_channels, self.num_frames, self.hidden_size = num_channels, num_frames, hidden_size
        self.dtype, self.scan_layers, self.remat = dtype, scan_layers, check_remat(remat)
        self.patch_embed = PatchEmbed(
            image_size, patch_size, num_channels, num_frames, tubelet_size, hidden_size, dtype=dtype, rngs=rngs
        )
        self.seq_length = int(np.prod(self.patch_embed.grid_size))

        def block(rngs, index):
            rate = None if block_rate is None else block_rate(index)
            args = (hidden_size, num_attention_heads, intermediate_size, qkv_bias, layer_norm_eps)
            return Block(*args, drop_path=rate, dtype=dtype, rngs=rngs)

        self.blocks = make_layers(block, num_hidden_layers, scan_layers=scan_layers, rngs=rngs, indexed=True)
        self.norm = (
            None if use_mean_pooling else torch_layer_norm(hidden_size, eps=layer_norm_eps, dtype=dtype, rngs=rngs)
        )

    @property
    def pos_embed(self):
        """(1, tokens, D) float32: the fixed sinusoid table, a constant of the compiled program."""
        return sinusoid_table(self.seq_length, self.hidden_size)

    def patchify(self, videos):
        return patchify(videos, self.patch_embed.tubelet_size, self.patch_embed.patch_size)

    def check(self, videos):
        check_video(
            videos, channels=self.num_channels, num_frames=self.num_frames, image_size=self.patch_embed.image_size
        )

    def embed(self, videos):
        """(patches (b, n, pt*p*q*c), their embeddings (b, n, D), the embeddings with positions)."""
        self.check(videos)
        patches = self.patchify(videos)
        embeddings = self.patch_embed(patches)
        return patches, embeddings, embeddings + jnp.asarray(self.pos_embed, self.dtype or videos.dtype)

    def __call__(self, tokens):
        """The blocks, then the final norm (if any), on (b, n, D) tokens that carry their positions."""
        tokens = run_layers(self.blocks, tokens, remat=self.remat)
        return tokens if self.norm is None else self.norm(tokens)


class Decoder(nnx.Module):
    """MCG-NJU's PretrainVisionTransformerDecoder (transformers' VideoMAEDecoder): the blocks, then the norm and the
    pixel head on the last `num_masked` tokens."""

    def __init__(
        self, dim, depth, num_heads, intermediate_size, qkv_bias, eps, norm_eps, num_labels, *, dtype, scan_layers,
        remat, rngs,
    ):  # fmt: skip
        check_widths((('decoder_hidden_size', dim, num_heads),))
        self.remat = remat
        self.blocks = make_layers(
            lambda rngs: Block(dim, num_heads, intermediate_size, qkv_bias, eps, dtype=dtype, rngs=rngs),
            depth,
            scan_layers=scan_layers,
            rngs=rngs,
        )
        self.norm = torch_layer_norm(dim, eps=norm_eps, dtype=dtype, rngs=rngs)
        self.head = xavier_linear(dim, num_labels, dtype=dtype, rngs=rngs)

    def __call__(self, tokens, num_masked):
        """(the normalised last `num_masked` tokens (b, m, Dd), their predictions (b, m, pt*p*q*c))."""
        tokens = run_layers(self.blocks, tokens, remat=self.remat)
        decoded = self.norm(tokens[:, -num_masked:])
        return decoded, self.head(decoded)


class VideoMAE(nnx.Module):
    """VideoMAE pretraining: tube-masked tubelets through the encoder, then the decoder predicts the masked ones.

    `num_patches` (one frame's patches) is the width of the masking noise and `num_masked` how many of them are masked;
    the sequence has `seq_length` tokens (frames / tubelet_size times as many), `num_masked_tokens` of them masked.
    """

    family = 'videomae'

    def __init__(
        self,
        *,
        image_size=224,
        patch_size=16,
        num_channels=3,
        num_frames=16,
        tubelet_size=2,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        qkv_bias=True,
        use_mean_pooling=True,
        layer_norm_eps=1e-12,
        decoder_hidden_size=384,
        decoder_num_hidden_layers=4,
        decoder_num_attention_heads=6,
        decoder_intermediate_size=1536,
        decoder_norm_eps=1e-5,
        mask_ratio=0.9,
        norm_pix_loss=True,
        dtype=None,
        scan_layers=False,
        remat='none',
        rngs,
    ):
        self.encoder = Encoder(
            image_size=image_size,
            patch_size=patch_size,
            num_channels=num_channels,
            num_frames=num_frames,
            tubelet_size=tubelet_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            intermediate_size=intermediate_size,
            qkv_bias=qkv_bias,
            use_mean_pooling=use_mean_pooling,
            layer_norm_eps=layer_norm_eps,
            dtype=dtype,
            scan_layers=scan_layers,
            remat=remat,
            rngs=rngs,
        )
        num_labels = tubelet_size * patch_size * patch_size * num_channels
        self.decoder = Decoder(
            decoder_hidden_size, decoder_num_hidden_layers, decoder_num_attention_heads, decoder_intermediate_size,
            qkv_bias, layer_norm_eps, decoder_norm_eps, num_labels, dtype=dtype, scan_layers=scan_layers,
            remat=remat, rngs=rngs,
        )  # fmt: skip
        self.encoder_to_decoder = torch_linear(hidden_size, decoder_hidden_size, use_bias=False, dtype=dtype, rngs=rngs)
        # MCG-NJU's trunc_normal_(std=0.02) with a = -std, b = std: cut at one standard deviation
        self.mask_token = nnx.Param(
            jax.random.truncated_normal(rngs.params(), -1.0, 1.0, (1, 1, decoder_hidden_size)) * 0.02
        )
        self.norm_pix_loss, self.mask_ratio, self.dtype = norm_pix_loss, mask_ratio, dtype
        self.decoder_hidden_size, self.num_channels = decoder_hidden_size, num_channels
        frame_groups, rows, columns = self.encoder.patch_embed.grid_size
        self.num_patches, self.seq_length = rows * columns, self.encoder.seq_length
        self.num_masked = MASKING.check(mask_ratio, self.num_patches, 'mask_ratio')
        self.num_masked_tokens = frame_groups * self.num_masked
        # the masking noise when none is passed: the 'noise' stream, or 'default'
        self.noise_rng = rngs.noise.fork()

    @property
    def decoder_pos_embed(self):
        return sinusoid_table(self.seq_length, self.decoder_hidden_size)

    def patchify(self, videos):
        return self.encoder.patchify(videos)

    def unpatchify(self, patches):
        embed = self.encoder.patch_embed
        return unpatchify(patches, embed.grid_size, embed.tubelet_size, embed.patch_size, self.num_channels)

    def masking(self, batch, noise=None, bool_masked_pos=None):
        """(bool_masked_pos (b, tokens), masked tokens per video): transformers' mask as given, or the tube mask of
        `noise` (b, num_patches) (drawn from the 'noise' stream when neither is given)."""
        if bool_masked_pos is not None:
            if noise is not None:
                raise ValueError('pass the masking noise or bool_masked_pos, not both')
            return check_bool_masked_pos(bool_masked_pos, batch, self.seq_length, self.num_masked_tokens)
        if noise is None:
            noise = jax.random.uniform(self.noise_rng(), (batch, self.num_patches))
        check_noise(noise, batch, self.num_patches)
        return tube_mask(noise, self.num_masked, self.encoder.patch_embed.grid_size[0]), self.num_masked_tokens

    def encode(self, videos, bool_masked_pos=None):
        """transformers' VideoMAEModel: (b, visible tokens, D), the encoder's output for the tokens not masked (all
        of them without a mask)."""
        self.encoder.check(videos)
        if bool_masked_pos is not None:
            bool_masked_pos, num_masked = check_bool_masked_pos(
                bool_masked_pos, len(videos), self.seq_length, self.num_masked_tokens
            )
        _, _, tokens = self.encoder.embed(videos)
        if bool_masked_pos is not None:
            order = jnp.argsort(bool_masked_pos.astype(jnp.int32), axis=-1, stable=True)
            tokens = gather_tokens(tokens, order[:, : self.seq_length - num_masked])
        return self.encoder(tokens)

    def __call__(self, videos, *, noise=None, bool_masked_pos=None, return_outputs=False):
        """(loss, logits (b, masked tokens, pt*p*q*c) in token order), as transformers' VideoMAEForPreTraining;
        MAEOutput with return_outputs=True. The mask: transformers' `bool_masked_pos` (b, tokens), or the tube mask
        of `noise` (b, num_patches)."""
        self.encoder.check(videos)
        bool_masked_pos, num_masked = self.masking(len(videos), noise, bool_masked_pos)
        patches, patch_embedding, tokens = self.encoder.embed(videos)
        keep = self.seq_length - num_masked

        # the visible tokens, then the masked ones, each in token order (a stable sort of the mask); every
        # reordering is a full permutation whose backward pass gathers through its inverse (permute_tokens)
        order = jnp.argsort(bool_masked_pos.astype(jnp.int32), axis=-1, stable=True)  # (b, n)
        restore = jnp.argsort(order, axis=-1)
        kept_indices, masked_indices = order[:, :keep], order[:, keep:]
        encoded_tokens = self.encoder(permute_tokens(tokens, order, restore)[:, :keep])  # (b, keep, D)

        # decoder: the visible tokens, then a mask token per masked one, each with its own position
        decoder_tokens = self.encoder_to_decoder(encoded_tokens)  # (b, keep, Dd)
        positions = jnp.asarray(self.decoder_pos_embed[0], decoder_tokens.dtype)[order]  # (b, n, Dd)
        mask_tokens = self.mask_token[...].astype(decoder_tokens.dtype) + positions[:, keep:]
        decoder_input = jnp.concatenate((decoder_tokens + positions[:, :keep], mask_tokens), axis=1)  # (b, n, Dd)
        decoded_tokens, logits = self.decoder(decoder_input, num_masked)  # (b, m, Dd), (b, m, pt*p*q*c)

        # mean squared error against the masked tubelets' targets, in float32
        embed = self.encoder.patch_embed
        targets, pixels = loss_targets(videos, embed.tubelet_size, embed.patch_size, self.norm_pix_loss)
        loss = jnp.square(logits.astype(jnp.float32) - gather_tokens(targets, masked_indices)).mean()
        # under jit a given mask's count cannot be checked before the shapes are set (the model's mask_ratio sets
        # them): a mask of another count makes the loss NaN, never a wrong number
        loss = jnp.where((bool_masked_pos.sum(axis=-1) == num_masked).all(), loss, jnp.nan)
        if not return_outputs:
            return loss, logits
        intermediates = dict(
            patches=patches,
            patch_embedding=patch_embedding,
            encoded_tokens=encoded_tokens,
            decoder_input=decoder_input,
            decoded_tokens=decoded_tokens,
        )
        masked_pixels = gather_tokens(pixels, masked_indices)
        return MAEOutput(loss, logits, masked_pixels, masked_indices, kept_indices, intermediates)

"""vit-pytorch's MAE in Flax NNX: the same function and parameters as mae_torch.MAE, images (b, h, w, c)."""

import jax
import jax.numpy as jnp
from einops import repeat
from flax import nnx

from mae_core.contract import MAEOutput
from mae_core.vit_pytorch import MASKING
from mae_flax.layers import torch_linear
from mae_flax.masking import check_noise, permute_tokens, random_masking
from mae_flax.patches import check_image, patchify
from mae_flax.vit_pytorch.vit import Transformer


def reconstruction_loss(pred_pixel_values, masked_patches, norm_pix_loss=False):
    """MSE over the masked patches in float32; with norm_pix_loss each target patch is standardised first
    (per-patch mean and unbiased variance, as facebookresearch/mae and torch.var)."""
    target = masked_patches.astype(jnp.float32)
    if norm_pix_loss:
        mean, var = target.mean(axis=-1, keepdims=True), target.var(axis=-1, keepdims=True, ddof=1)
        target = (target - mean) / (var + 1e-6) ** 0.5
    return jnp.mean(jnp.square(pred_pixel_values.astype(jnp.float32) - target))


class MAE(nnx.Module):
    family = 'vit_pytorch'

    def __init__(
        self,
        *,
        encoder,
        decoder_dim,
        masking_ratio=0.75,
        decoder_depth=1,
        decoder_heads=8,
        decoder_dim_head=64,
        norm_pix_loss=False,
        dtype=None,
        rngs,
    ):
        self.encoder = encoder
        # vit-pytorch sizes decoder_pos_emb from pos_embedding: n + 1 rows with pool='cls', row i for patch i
        num_pos_embeddings, encoder_dim = encoder.pos_embedding.shape
        self.num_patches = num_pos_embeddings - encoder.num_cls_tokens
        self.masking_ratio = masking_ratio
        self.num_masked = MASKING.check(masking_ratio, self.num_patches)
        self.norm_pix_loss = norm_pix_loss
        dtype = encoder.dtype if dtype is None else dtype
        pixel_values_per_patch = encoder.to_patch_embedding.linear.in_features

        self.decoder_dim = decoder_dim
        self.enc_to_dec = (
            torch_linear(encoder_dim, decoder_dim, dtype=dtype, rngs=rngs) if encoder_dim != decoder_dim else None
        )
        self.mask_token = nnx.Param(jax.random.normal(rngs.params(), (decoder_dim,)))
        self.decoder = Transformer(
            decoder_dim,
            decoder_depth,
            decoder_heads,
            decoder_dim_head,
            decoder_dim * 4,
            eps=encoder.layer_norm_eps,
            dtype=dtype,
            scan_layers=encoder.scan_layers,
            remat=encoder.remat,
            rngs=rngs,
        )
        self.decoder_pos_emb = nnx.Param(jax.random.normal(rngs.params(), (num_pos_embeddings, decoder_dim)))
        self.to_pixels = torch_linear(decoder_dim, pixel_values_per_patch, dtype=dtype, rngs=rngs)
        # the masking noise when none is passed: the 'noise' stream, or 'default'
        self.noise_rng = rngs.noise.fork()

    def __call__(self, img, *, noise=None, return_outputs=False):
        encoder = self.encoder
        check_image(img, channels=encoder.channels, image_size=encoder.image_size)

        # get patches and encoder tokens with positions; patch i takes pos_embedding[num_cls + i]
        patches = patchify(img, encoder.patch_size)  # (b, n, patch_dim)
        batch, num_patches, _ = patches.shape
        tokens = encoder.to_patch_embedding(patches)  # (b, n, d)
        patch_embedding = tokens
        num_cls = encoder.num_cls_tokens
        tokens = tokens + encoder.pos_embedding[num_cls : num_cls + num_patches].astype(tokens.dtype)

        # the smallest noise is masked
        if noise is None:
            noise = jax.random.uniform(self.noise_rng(), (batch, num_patches))
        check_noise(noise, batch, num_patches)
        masked_indices, unmasked_indices = random_masking(noise, self.num_masked, MASKING)  # (b, m), (b, n - m)

        # every reordering is a full permutation (then a slice), so that the backward pass gathers through the
        # inverse permutation: no scatter, no sort (permute_tokens)
        order = jnp.concatenate((masked_indices, unmasked_indices), axis=1)  # (b, n): noise order, masked first
        restore = jnp.argsort(order, axis=-1)  # (b, n): its inverse, back to patch order
        m = self.num_masked
        tokens = permute_tokens(tokens, order, restore)[:, m:]  # (b, n - m, d)
        masked_patches = permute_tokens(patches, order, restore)[:, :m]  # (b, m, patch_dim)

        encoded_tokens = encoder.transformer(tokens)  # (b, n - m, d)
        decoder_tokens = self.enc_to_dec(encoded_tokens) if self.enc_to_dec is not None else encoded_tokens

        # back to patch order with a gather through the inverse permutation, not a scatter (faster on TPU);
        # adding positions after the gather gives the same sums as adding them before
        mask_tokens = repeat(self.mask_token[...].astype(decoder_tokens.dtype), 'd -> b m d', b=batch, m=m)
        shuffled_tokens = jnp.concatenate((mask_tokens, decoder_tokens), axis=1)  # (b, n, decoder_dim) in noise order
        decoder_pos_emb = self.decoder_pos_emb[:num_patches].astype(decoder_tokens.dtype)
        decoder_input = permute_tokens(shuffled_tokens, restore, order) + decoder_pos_emb
        decoded_tokens = self.decoder(decoder_input)  # (b, n, decoder_dim)

        # splice out the mask tokens and project to pixel values
        pred_pixel_values = self.to_pixels(permute_tokens(decoded_tokens, order, restore)[:, :m])  # (b, m, patch_dim)

        loss = reconstruction_loss(pred_pixel_values, masked_patches, self.norm_pix_loss)
        if not return_outputs:
            return loss
        intermediates = dict(
            patches=patches,
            patch_embedding=patch_embedding,
            encoded_tokens=encoded_tokens,
            decoder_input=decoder_input,
            decoded_tokens=decoded_tokens,
        )
        return MAEOutput(loss, pred_pixel_values, masked_patches, masked_indices, unmasked_indices, intermediates)

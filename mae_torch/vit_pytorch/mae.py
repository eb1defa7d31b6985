"""vit-pytorch's MAE with its bugs fixed: pool='cls' works, bf16 works, masking noise is an input."""

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

from mae_core.contract import MAEOutput
from mae_core.vit_pytorch import MASKING
from mae_torch.masking import check_noise, random_masking
from mae_torch.patches import check_image
from mae_torch.vit_pytorch.vit import Transformer


def reconstruction_loss(pred_pixel_values, masked_patches, norm_pix_loss=False):
    """MSE over the masked patches in float32; with norm_pix_loss each target patch is standardised first
    (per-patch mean and unbiased variance, as facebookresearch/mae)."""
    target = masked_patches.float()
    if norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    return F.mse_loss(pred_pixel_values.float(), target)


class MAE(nn.Module):
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
    ):
        super().__init__()
        self.encoder = encoder
        # vit-pytorch sizes decoder_pos_emb from pos_embedding: n + 1 rows with pool='cls', row i for patch i
        num_pos_embeddings, encoder_dim = encoder.pos_embedding.shape[-2:]
        self.num_cls_tokens = 1 if encoder.pool == 'cls' else 0
        self.num_patches = num_pos_embeddings - self.num_cls_tokens
        self.masking_ratio = masking_ratio
        self.num_masked = MASKING.check(masking_ratio, self.num_patches)
        self.norm_pix_loss = norm_pix_loss

        self.to_patch = encoder.to_patch_embedding[0]
        self.patch_to_emb = nn.Sequential(*encoder.to_patch_embedding[1:])
        pixel_values_per_patch = encoder.to_patch_embedding[2].weight.shape[-1]

        self.decoder_dim = decoder_dim
        self.enc_to_dec = nn.Linear(encoder_dim, decoder_dim) if encoder_dim != decoder_dim else nn.Identity()
        self.mask_token = nn.Parameter(torch.randn(decoder_dim))
        self.decoder = Transformer(
            dim=decoder_dim,
            depth=decoder_depth,
            heads=decoder_heads,
            dim_head=decoder_dim_head,
            mlp_dim=decoder_dim * 4,
            layer_norm_eps=encoder.layer_norm_eps,
        )
        self.decoder_pos_emb = nn.Embedding(num_pos_embeddings, decoder_dim)
        self.to_pixels = nn.Linear(decoder_dim, pixel_values_per_patch)

    def forward(self, img, noise=None, return_outputs=False):
        check_image(img, channels=self.encoder.channels, image_size=self.encoder.image_size)

        # get patches and encoder tokens with positions; patch i takes pos_embedding[num_cls + i]
        patches = self.to_patch(img)  # (b, n, patch_dim)
        batch, num_patches, _ = patches.shape
        tokens = self.patch_to_emb(patches)  # (b, n, d)
        patch_embedding = tokens
        pos_embedding = self.encoder.pos_embedding[self.num_cls_tokens : self.num_cls_tokens + num_patches]
        tokens = tokens + pos_embedding.to(tokens.dtype)

        # the smallest noise is masked; the draw is vit-pytorch's, so the same seed masks the same patches
        if noise is None:
            noise = torch.rand(batch, num_patches, device=img.device)
        check_noise(noise, batch, num_patches)
        masked_indices, unmasked_indices = random_masking(noise, self.num_masked, MASKING)  # (b, m), (b, n - m)

        batch_range = torch.arange(batch, device=img.device)[:, None]
        tokens = tokens[batch_range, unmasked_indices]  # (b, n - m, d)
        masked_patches = patches[batch_range, masked_indices]  # (b, m, patch_dim)

        encoded_tokens = self.encoder.transformer(tokens)  # (b, n - m, d)
        decoder_tokens = self.enc_to_dec(encoded_tokens)  # (b, n - m, decoder_dim)

        # back to patch order with a gather through the inverse permutation (no float32 buffer to scatter into,
        # so bf16 works); adding positions after the gather gives the same sums as vit-pytorch's
        mask_tokens = repeat(self.mask_token, 'd -> b m d', b=batch, m=self.num_masked).to(decoder_tokens.dtype)
        shuffled_tokens = torch.cat((mask_tokens, decoder_tokens), dim=1)  # (b, n, decoder_dim) in noise order
        restore_indices = torch.cat((masked_indices, unmasked_indices), dim=1).argsort(dim=-1)  # (b, n)
        decoder_input = shuffled_tokens[batch_range, restore_indices] + self.decoder_pos_emb.weight[:num_patches]
        decoded_tokens = self.decoder(decoder_input)  # (b, n, decoder_dim)

        # splice out the mask tokens and project to pixel values
        pred_pixel_values = self.to_pixels(decoded_tokens[batch_range, masked_indices])  # (b, m, patch_dim)

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

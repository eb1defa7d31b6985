"""facebookresearch/mae's MaskedAutoencoderViT without timm, on current torch and numpy: the same keywords,
defaults, state_dict keys and function, so its published `.pth` files load with strict=True.

Unlike upstream: `noise` can be passed (it replaces torch.rand), `in_chans` other than 3 works in patchify, the
position embeddings are computed in float64 once (mae_core.official), `layer_norm_eps`, `decoder_mlp_ratio` and
`mask_ratio` are keywords (HuggingFace configs carry them), and `return_outputs=True` gives the project's MAEOutput.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mae_core.contract import MAEOutput
from mae_core.fields import pair
from mae_core.official import FACTORIES, MASKING, sincos_pos_embed
from mae_torch.masking import check_noise, random_masking
from mae_torch.patches import check_image


class PatchEmbed(nn.Module):
    """timm's PatchEmbed: a p x p convolution with stride p, flattened to (b, n, d)."""

    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        self.img_size, self.patch_size = pair(img_size), pair(patch_size)
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x):
        return rearrange(self.proj(x), 'b d h w -> b (h w) d')


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = rearrange(self.qkv(x), 'b n (three h d) -> three b h n d', three=3, h=self.num_heads)
        if x.device.type == 'cpu':  # as mae_torch.ViT: torch's fused CPU kernel is the slower one
            out = torch.matmul(torch.matmul(q, k.transpose(-1, -2)).mul(self.scale).softmax(dim=-1), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(rearrange(out, 'b h n d -> b n (h d)'))


class Mlp(nn.Module):
    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm's pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim, num_heads, mlp_ratio, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def patchify(imgs, patch_size):
    """(N, C, H, W) -> (N, L, p * q * C), facebookresearch/mae's layout: 'nchpwq -> nhwpqc'."""
    p, q = pair(patch_size)
    return rearrange(imgs, 'n c (h p) (w q) -> n (h w) (p q c)', p=p, q=q)


def unpatchify(x, img_size, patch_size, in_chans=3):
    """(N, L, p * q * C) -> (N, C, H, W); the inverse of `patchify`."""
    (height, _), (p, q) = pair(img_size), pair(patch_size)
    return rearrange(x, 'n (h w) (p q c) -> n c (h p) (w q)', h=height // p, p=p, q=q, c=in_chans)


def forward_loss(target, pred, mask, norm_pix_loss):
    """Mean over the removed patches of the per-patch MSE, in float32; norm_pix_loss standardises each target
    patch (unbiased variance, + 1e-6) first."""
    target, pred = target.float(), pred.float()
    if norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(dim=-1)  # (N, L), mean loss per patch
    return (loss * mask).sum() / mask.sum()


class MaskedAutoencoderViT(nn.Module):
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
        norm_layer=None,
        norm_pix_loss=False,
        *,
        layer_norm_eps=1e-6,
        decoder_mlp_ratio=None,
        mask_ratio=0.75,
    ):
        super().__init__()
        if norm_layer is not None:  # upstream's factories pass partial(nn.LayerNorm, eps=1e-6): take its eps
            layer_norm_eps = norm_layer.keywords.get('eps', 1e-5) if hasattr(norm_layer, 'keywords') else 1e-5
        image, patch = pair(img_size), pair(patch_size)
        if image[0] % patch[0] or image[1] % patch[1]:
            raise ValueError(f'img_size {image} must be divisible by patch_size {patch}')
        for name, width, heads in (('', embed_dim, num_heads), ('decoder_', decoder_embed_dim, decoder_num_heads)):
            if width % heads:
                raise ValueError(f'{name}embed_dim {width} must be divisible by {name}num_heads {heads}')
        self.in_chans, self.norm_pix_loss, self.mask_ratio = in_chans, norm_pix_loss, mask_ratio
        decoder_mlp_ratio = mlp_ratio if decoder_mlp_ratio is None else decoder_mlp_ratio

        # encoder
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.num_patches = self.patch_embed.num_patches
        self.num_masked = MASKING.check(mask_ratio, self.num_patches, 'mask_ratio')
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # fixed sin-cos embedding, in the state dict as upstream, never trained
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, layer_norm_eps) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)

        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, self.num_patches + 1, decoder_embed_dim), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, decoder_mlp_ratio, layer_norm_eps) for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=layer_norm_eps)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch[0] * patch[1] * in_chans, bias=True)
        self.initialize_weights()

    def initialize_weights(self):
        """As upstream: sin-cos position embeddings, xavier_uniform Linear and (flattened) patch projection,
        normal(0.02) tokens, LayerNorm 1 / 0."""
        grid = self.patch_embed.grid_size
        with torch.no_grad():
            self.pos_embed.copy_(torch.tensor(sincos_pos_embed(self.pos_embed.shape[-1], grid)))
            self.decoder_pos_embed.copy_(torch.tensor(sincos_pos_embed(self.decoder_pos_embed.shape[-1], grid)))
        weight = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(weight.view([weight.shape[0], -1]))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)
            elif isinstance(module, nn.LayerNorm):
                nn.init.constant_(module.bias, 0)
                nn.init.constant_(module.weight, 1.0)

    def patchify(self, imgs):
        return patchify(imgs, self.patch_embed.patch_size)

    def unpatchify(self, x):
        return unpatchify(x, self.patch_embed.img_size, self.patch_embed.patch_size, self.in_chans)

    def forward(self, imgs, mask_ratio=None, noise=None, return_outputs=False):
        """(loss, pred (N, L, p*q*C) for every patch, mask (N, L) with 1 = removed), as upstream; MAEOutput with
        return_outputs=True. `mask_ratio` defaults to the model's (0.75, upstream's default)."""
        check_image(imgs, channels=self.in_chans, image_size=self.patch_embed.img_size)
        mask_ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        num_masked = (
            self.num_masked
            if mask_ratio == self.mask_ratio
            else MASKING.check(mask_ratio, self.num_patches, 'mask_ratio')
        )
        batch, num_patches = imgs.shape[0], self.num_patches

        # embed patches, add positions (the cls row is the cls token's)
        tokens = self.patch_embed(imgs)  # (N, L, D)
        patch_embedding = tokens
        tokens = tokens + self.pos_embed[:, 1:, :].to(tokens.dtype)

        # the smallest noise is kept
        if noise is None:
            noise = torch.rand(batch, num_patches, device=imgs.device)
        check_noise(noise, batch, num_patches)
        masked_indices, kept_indices = random_masking(noise, num_masked, MASKING)  # (N, L - keep), (N, keep)
        batch_range = torch.arange(batch, device=imgs.device)[:, None]
        tokens = tokens[batch_range, kept_indices]  # (N, keep, D)
        cls_tokens = (self.cls_token + self.pos_embed[:, :1, :]).to(tokens.dtype).expand(batch, -1, -1)
        tokens = torch.cat((cls_tokens, tokens), dim=1)  # (N, 1 + keep, D)
        for block in self.blocks:
            tokens = block(tokens)
        encoded_tokens = self.norm(tokens)

        # decoder: mask tokens appended, unshuffled to patch order, positions added
        decoder_tokens = self.decoder_embed(encoded_tokens)  # (N, 1 + keep, Dd)
        mask_tokens = self.mask_token.to(decoder_tokens.dtype).expand(batch, num_masked, -1)
        shuffled = torch.cat((decoder_tokens[:, 1:], mask_tokens), dim=1)  # (N, L, Dd) in noise order
        restore_indices = torch.cat((kept_indices, masked_indices), dim=1).argsort(dim=-1)  # (N, L)
        decoder_input = torch.cat((decoder_tokens[:, :1], shuffled[batch_range, restore_indices]), dim=1)
        decoder_input = decoder_input + self.decoder_pos_embed.to(decoder_input.dtype)  # (N, 1 + L, Dd)
        tokens = decoder_input
        for block in self.decoder_blocks:
            tokens = block(tokens)
        decoded_tokens = self.decoder_norm(tokens)
        pred = self.decoder_pred(decoded_tokens)[:, 1:, :]  # (N, L, p*q*C), the cls token removed

        target = self.patchify(imgs)  # (N, L, p*q*C)
        mask = torch.ones(batch, num_patches, device=imgs.device)
        mask[batch_range, kept_indices] = 0
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
        masked_patches = target[batch_range, masked_indices]
        pred_pixel_values = pred[batch_range, masked_indices]
        return MAEOutput(loss, pred_pixel_values, masked_patches, masked_indices, kept_indices, intermediates)


def _factory(name):
    def build(**kwargs):
        return MaskedAutoencoderViT(
            **FACTORIES[name],
            decoder_embed_dim=512,
            decoder_depth=8,
            decoder_num_heads=16,
            mlp_ratio=4,
            layer_norm_eps=1e-6,
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


class VisionTransformer(nn.Module):
    """facebookresearch/mae's fine-tuning model (models_vit.VisionTransformer: timm's VisionTransformer with
    `global_pool`), without timm: the MAE's encoder with a head, under timm's keys (`cls_token`, `pos_embed`,
    `patch_embed.proj`, `blocks.{i}`, `norm` or, with global_pool='avg', `fc_norm`, `head`), so its state dicts
    load into timm's `VisionTransformer(global_pool='avg' | 'token')` and back with strict=True. Evaluation only:
    fine-tuning runs in Flax (mae-finetune); drop path is not implemented here."""

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
    ):
        super().__init__()
        if global_pool not in ('avg', 'token'):
            raise ValueError(f"global_pool must be 'avg' or 'token', got {global_pool!r}")
        self.global_pool = global_pool
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(
            torch.tensor(sincos_pos_embed(embed_dim, self.patch_embed.grid_size), dtype=torch.float32)
        )
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, layer_norm_eps) for _ in range(depth))
        if global_pool == 'avg':
            self.fc_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        else:
            self.norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward_features(self, imgs):
        """(N, D): the pooled, normalised representation the head sees."""
        check_image(imgs, channels=self.patch_embed.proj.in_channels, image_size=self.patch_embed.img_size)
        tokens = self.patch_embed(imgs) + self.pos_embed[:, 1:].to(imgs.dtype)
        cls = (self.cls_token + self.pos_embed[:, :1]).to(tokens.dtype).expand(len(imgs), -1, -1)
        tokens = torch.cat((cls, tokens), dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        if self.global_pool == 'avg':
            return self.fc_norm(tokens[:, 1:].mean(dim=1))
        return self.norm(tokens)[:, 0]

    def forward(self, imgs):
        return self.head(self.forward_features(imgs))

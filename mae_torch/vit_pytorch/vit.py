"""vit-pytorch's ViT (1.26.x), same keywords and state_dict, errors instead of asserts, SDPA attention on GPUs.

One keyword more than vit-pytorch: `layer_norm_eps` (torch's 1e-5, which vit-pytorch uses, by default).
"""

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from mae_core.fields import pair
from mae_core.vit_pytorch import upgrade_legacy
from mae_torch.patches import Patchify, check_image


class FeedForward(nn.Module):
    def __init__(self, dim, hidden_dim, dropout=0.0, layer_norm_eps=1e-5):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim, eps=layer_norm_eps),
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)


class Attention(nn.Module):
    def __init__(self, dim, heads=8, dim_head=64, dropout=0.0, layer_norm_eps=1e-5):
        super().__init__()
        inner_dim = dim_head * heads
        project_out = not (heads == 1 and dim_head == dim)

        self.heads = heads
        self.scale = dim_head**-0.5

        self.norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout)) if project_out else nn.Identity()

    def forward(self, x):
        x = self.norm(x)

        q, k, v = (rearrange(t, 'b n (h d) -> b h n d', h=self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))

        # softmax(q k^T * scale) v, with dropout on the attention weights as vit-pytorch
        if x.device.type == 'cpu':
            # torch's fused CPU kernel is slower than these two matmuls, its backward most (6x in bf16)
            attn = self.dropout(torch.matmul(q, k.transpose(-1, -2)).mul(self.scale).softmax(dim=-1))  # (b, h, n, n)
            out = torch.matmul(attn, v)  # (b, h, n, d)
        else:
            dropout_p = self.dropout.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=self.scale)  # (b, h, n, d)
        out = rearrange(out, 'b h n d -> b n (h d)')
        return self.to_out(out)


class Transformer(nn.Module):
    def __init__(self, dim, depth, heads, dim_head, mlp_dim, dropout=0.0, layer_norm_eps=1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    Attention(dim, heads=heads, dim_head=dim_head, dropout=dropout, layer_norm_eps=layer_norm_eps),
                    FeedForward(dim, mlp_dim, dropout=dropout, layer_norm_eps=layer_norm_eps),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x):
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


class ViT(nn.Module):
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
    ):
        super().__init__()
        self.image_size = image_height, image_width = pair(image_size)
        self.patch_size = patch_height, patch_width = pair(patch_size)

        if image_height % patch_height or image_width % patch_width:
            raise ValueError(f'image_size {self.image_size} must be divisible by patch_size {self.patch_size}')
        if pool not in {'cls', 'mean'}:
            raise ValueError(f"pool must be 'cls' (cls token) or 'mean' (mean pooling), got {pool!r}")

        num_patches = (image_height // patch_height) * (image_width // patch_width)
        patch_dim = channels * patch_height * patch_width
        num_cls_tokens = 1 if pool == 'cls' else 0

        self.channels = channels
        self.layer_norm_eps = layer_norm_eps
        self.to_patch_embedding = nn.Sequential(
            Patchify(self.patch_size),
            nn.LayerNorm(patch_dim, eps=layer_norm_eps),
            nn.Linear(patch_dim, dim),
            nn.LayerNorm(dim, eps=layer_norm_eps),
        )

        self.cls_token = nn.Parameter(torch.randn(num_cls_tokens, dim))
        self.pos_embedding = nn.Parameter(torch.randn(num_patches + num_cls_tokens, dim))

        self.dropout = nn.Dropout(emb_dropout)

        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, dropout, layer_norm_eps)

        self.pool = pool
        self.to_latent = nn.Identity()

        self.mlp_head = nn.Linear(dim, num_classes) if num_classes > 0 else None

        self.register_load_state_dict_pre_hook(_upgrade_legacy_state_dict)

    @property
    def num_cls_tokens(self):
        return self.cls_token.shape[0]

    def forward(self, img):
        check_image(img, channels=self.channels, image_size=self.image_size)
        batch = img.shape[0]
        x = self.to_patch_embedding(img)  # (b, n, d)

        cls_tokens = repeat(self.cls_token, '... d -> b ... d', b=batch)
        x = torch.cat((cls_tokens, x), dim=1)  # (b, num_cls + n, d)

        x = x + self.pos_embedding[: x.shape[1]]
        x = self.dropout(x)

        x = self.transformer(x)

        if self.mlp_head is None:
            return x

        x = x.mean(dim=1) if self.pool == 'mean' else x[:, 0]  # (b, d)

        x = self.to_latent(x)
        return self.mlp_head(x)


def _upgrade_legacy_state_dict(module, state_dict, prefix, *args):
    """Loads vit-pytorch checkpoints from before its 2-D change: pos_embedding (1, n + 1, d), cls_token (1, 1, d)."""
    upgrade_legacy(state_dict, prefix, module.pool)

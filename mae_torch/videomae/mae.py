"""MCG-NJU/VideoMAE's PretrainVisionTransformer (and its fine-tuning VisionTransformer) without timm: the same
state_dict keys as upstream, the same function as HuggingFace transformers' VideoMAEForPreTraining, videos
(b, t, c, h, w) as transformers takes them.

Unlike upstream: the keywords are transformers' VideoMAEConfig's (mae_core.videomae), the mask is transformers'
`bool_masked_pos` or the tube mask of a masking `noise`, the loss is computed in the model (transformers' targets),
LayerNorm epsilons are keywords, and `return_outputs=True` gives the project's MAEOutput.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mae_core.contract import MAEOutput
from mae_core.fields import pair
from mae_core.videomae import (
    MASKING,
    NORM_PIX_EPS,
    TARGET_MEAN,
    TARGET_STD,
    check_widths,
    grid,
    sinusoid_table,
)
from mae_torch.masking import check_noise
from mae_torch.official.mae import Mlp
from mae_torch.patches import check_batch


def check_video(videos, *, channels, num_frames, image_size):
    """Raises unless `videos` is a non-empty floating (b, num_frames, channels, height, width) batch."""
    check_batch(videos, (num_frames, channels, *pair(image_size)), 'frames, channels, height, width', 'video')


def check_bool_masked_pos(bool_masked_pos, batch, num_tokens):
    """Masked tokens per video of transformers' `bool_masked_pos` (b, tokens), True = masked; every video must mask
    as many."""
    if not isinstance(bool_masked_pos, torch.Tensor):
        raise TypeError(f'expected bool_masked_pos as a torch.Tensor, got {type(bool_masked_pos).__name__}')
    if tuple(bool_masked_pos.shape) != (batch, num_tokens):
        raise ValueError(
            f'expected bool_masked_pos of shape (batch, tokens) = ({batch}, {num_tokens}), '
            f'got {tuple(bool_masked_pos.shape)}'
        )
    if bool_masked_pos.dtype != torch.bool:
        raise TypeError(f'expected a boolean bool_masked_pos (True = masked), got {bool_masked_pos.dtype}')
    counts = bool_masked_pos.sum(dim=1)
    if (counts != counts[0]).any():
        raise ValueError(f'every video must mask the same number of tokens, got {sorted(set(counts.tolist()))}')
    if not 0 < counts[0] < num_tokens:
        raise ValueError(f'bool_masked_pos masks {counts[0]} of {num_tokens} tokens: mask at least one, keep one')
    return int(counts[0])


def tube_mask(noise, num_masked, frame_groups):
    """noise (b, n) over one frame's patches -> bool_masked_pos (b, frame_groups * n): the `num_masked` patches of
    largest noise masked, the same ones in every frame-group (tube masking)."""
    masked, _ = MASKING.split(noise.argsort(dim=-1), num_masked)  # (b, num_masked)
    per_frame = torch.zeros(noise.shape, dtype=torch.bool, device=noise.device).scatter_(1, masked, True)
    return per_frame.repeat(1, frame_groups)


def patchify(videos, tubelet_size, patch_size):
    """(b, t, c, h, w) -> (b, (t/pt * h/p * w/p), (pt p q c)): tokens in (t, h, w) order, as the Conv3d's."""
    return rearrange(
        videos, 'b (t pt) c (h p) (w q) -> b (t h w) (pt p q c)', pt=tubelet_size, p=patch_size, q=patch_size
    )


def loss_targets(videos, tubelet_size, patch_size, norm_pix_loss):
    """(targets, pixels), both (b, n, pt*p*q*c) float32, as transformers computes its labels (see mae_flax's)."""
    frames = videos.float()
    if frames.shape[2] == 3:
        mean = torch.as_tensor(TARGET_MEAN, device=frames.device)[None, None, :, None, None]
        std = torch.as_tensor(TARGET_STD, device=frames.device)[None, None, :, None, None]
        frames = frames * std + mean
    pixels = patchify(frames, tubelet_size, patch_size)
    if not norm_pix_loss:
        return pixels, pixels
    values = rearrange(
        frames, 'b (t pt) c (h p) (w q) -> b (t h w) (pt p q) c', pt=tubelet_size, p=patch_size, q=patch_size
    )
    values = (values - values.mean(dim=-2, keepdim=True)) / (
        values.var(dim=-2, unbiased=True, keepdim=True).sqrt() + NORM_PIX_EPS
    )
    return rearrange(values, 'b n s c -> b n (s c)'), pixels


class PatchEmbed(nn.Module):
    """The tubelet embedding: a Conv3d with kernel and stride (tubelet, p, p), flattened to (b, n, d)."""

    def __init__(self, image_size, patch_size, num_channels, num_frames, tubelet_size, hidden_size):
        super().__init__()
        self.image_size, self.patch_size, self.tubelet_size = pair(image_size), patch_size, tubelet_size
        self.grid_size = grid(image_size, patch_size, num_frames, tubelet_size)
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(num_channels, hidden_size, kernel_size=kernel, stride=kernel)

    def forward(self, videos):
        return rearrange(self.proj(videos.transpose(1, 2)), 'b d t h w -> b (t h w) d')


class Attention(nn.Module):
    """MCG-NJU's attention: one qkv matmul whose bias is (q_bias, 0, v_bias)."""

    def __init__(self, dim, num_heads, qkv_bias):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias, requires_grad=False), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = rearrange(qkv, 'b n (three h d) -> three b h n d', three=3, h=self.num_heads)
        if x.device.type == 'cpu':  # as mae_torch's other families: torch's fused CPU kernel is the slower one
            out = torch.matmul(torch.matmul(q, k.transpose(-1, -2)).mul(self.scale).softmax(dim=-1), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(rearrange(out, 'b h n d -> b n (h d)'))


class Block(nn.Module):
    """The pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim, num_heads, intermediate_size, qkv_bias, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, intermediate_size)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _init_weights(module):
    """MCG-NJU's: xavier_uniform Linears with zero biases, LayerNorm 1 / 0 (the Conv3d keeps torch's init)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.constant_(layer.bias, 0)
        elif isinstance(layer, nn.LayerNorm):
            nn.init.constant_(layer.bias, 0)
            nn.init.constant_(layer.weight, 1.0)


class Encoder(nn.Module):
    """The tubelet embedding, the blocks and (unless use_mean_pooling) the final norm."""

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
    ):
        super().__init__()
        check_widths((('hidden_size', hidden_size, num_attention_heads),))
        self.num_channels, self.num_frames = num_channels, num_frames
        self.patch_embed = PatchEmbed(image_size, patch_size, num_channels, num_frames, tubelet_size, hidden_size)
        self.seq_length = self.patch_embed.grid_size[0] * self.patch_embed.grid_size[1] * self.patch_embed.grid_size[2]
        # the fixed table: moves with the module, never in its state dict (upstream's is a plain tensor)
        self.register_buffer('pos_embed', torch.tensor(sinusoid_table(self.seq_length, hidden_size)), persistent=False)
        args = (hidden_size, num_attention_heads, intermediate_size, qkv_bias, layer_norm_eps)
        self.blocks = nn.ModuleList(Block(*args) for _ in range(num_hidden_layers))
        self.norm = None if use_mean_pooling else nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        _init_weights(self)

    def patchify(self, videos):
        return patchify(videos, self.patch_embed.tubelet_size, self.patch_embed.patch_size)

    def check(self, videos):
        check_video(
            videos, channels=self.num_channels, num_frames=self.num_frames, image_size=self.patch_embed.image_size
        )

    def embed(self, videos):
        """(their embeddings (b, n, D), the embeddings with positions)."""
        self.check(videos)
        embeddings = self.patch_embed(videos)
        return embeddings, embeddings + self.pos_embed.to(embeddings.dtype)

    def forward(self, tokens):
        """The blocks, then the final norm (if any), on (b, n, D) tokens that carry their positions."""
        for block in self.blocks:
            tokens = block(tokens)
        return tokens if self.norm is None else self.norm(tokens)


class Decoder(nn.Module):
    """The blocks, then the norm and the pixel head on the last `num_masked` tokens."""

    def __init__(self, dim, depth, num_heads, intermediate_size, qkv_bias, eps, norm_eps, num_labels):
        super().__init__()
        check_widths((('decoder_hidden_size', dim, num_heads),))
        self.blocks = nn.ModuleList(Block(dim, num_heads, intermediate_size, qkv_bias, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.head = nn.Linear(dim, num_labels)
        _init_weights(self)

    def forward(self, tokens, num_masked):
        for block in self.blocks:
            tokens = block(tokens)
        decoded = self.norm(tokens[:, -num_masked:])
        return decoded, self.head(decoded)


class VideoMAE(nn.Module):
    """VideoMAE pretraining (MCG-NJU's PretrainVisionTransformer keys): see mae_flax.videomae.VideoMAE."""

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
    ):
        super().__init__()
        # upstream's order of registration, hence of the state dict: mask_token, encoder.*, decoder.*,
        # encoder_to_decoder
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
        )
        num_labels = tubelet_size * patch_size * patch_size * num_channels
        self.decoder = Decoder(
            decoder_hidden_size, decoder_num_hidden_layers, decoder_num_attention_heads, decoder_intermediate_size,
            qkv_bias, layer_norm_eps, decoder_norm_eps, num_labels,
        )  # fmt: skip
        self.encoder_to_decoder = nn.Linear(hidden_size, decoder_hidden_size, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_hidden_size))
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)
        self.register_buffer(
            'decoder_pos_embed',
            torch.tensor(sinusoid_table(self.encoder.seq_length, decoder_hidden_size)),
            persistent=False,
        )
        self.norm_pix_loss, self.mask_ratio, self.num_channels = norm_pix_loss, mask_ratio, num_channels
        frame_groups, rows, columns = self.encoder.patch_embed.grid_size
        self.num_patches, self.seq_length = rows * columns, self.encoder.seq_length
        self.num_masked = MASKING.check(mask_ratio, self.num_patches, 'mask_ratio')
        self.num_masked_tokens = frame_groups * self.num_masked

    def patchify(self, videos):
        return self.encoder.patchify(videos)

    def masking(self, batch, noise=None, bool_masked_pos=None, device=None):
        """(bool_masked_pos (b, tokens), masked tokens per video): transformers' mask as given, or the tube mask of
        `noise` (b, num_patches) (torch.rand when neither is given)."""
        if bool_masked_pos is not None:
            if noise is not None:
                raise ValueError('pass the masking noise or bool_masked_pos, not both')
            return bool_masked_pos, check_bool_masked_pos(bool_masked_pos, batch, self.seq_length)
        if noise is None:
            noise = torch.rand(batch, self.num_patches, device=device)
        check_noise(noise, batch, self.num_patches)
        return tube_mask(noise, self.num_masked, self.encoder.patch_embed.grid_size[0]), self.num_masked_tokens

    def encode(self, videos, bool_masked_pos=None):
        """transformers' VideoMAEModel: (b, visible tokens, D)."""
        _, tokens = self.encoder.embed(videos)
        if bool_masked_pos is not None:
            check_bool_masked_pos(bool_masked_pos, len(videos), self.seq_length)
            tokens = tokens[~bool_masked_pos].reshape(len(videos), -1, tokens.shape[-1])
        return self.encoder(tokens)

    def forward(self, videos, *, noise=None, bool_masked_pos=None, return_outputs=False):
        """(loss, logits (b, masked tokens, pt*p*q*c) in token order), as transformers' VideoMAEForPreTraining;
        MAEOutput with return_outputs=True."""
        self.encoder.check(videos)
        bool_masked_pos, num_masked = self.masking(len(videos), noise, bool_masked_pos, videos.device)
        patch_embedding, tokens = self.encoder.embed(videos)
        batch, dim = tokens.shape[0], tokens.shape[-1]
        visible = ~bool_masked_pos

        # the visible tokens, in token order (transformers' boolean indexing)
        encoded_tokens = self.encoder(tokens[visible].reshape(batch, -1, dim))  # (b, keep, D)

        # decoder: the visible tokens, then a mask token per masked one, each with its own position
        decoder_tokens = self.encoder_to_decoder(encoded_tokens)  # (b, keep, Dd)
        positions = self.decoder_pos_embed.to(decoder_tokens.dtype).expand(batch, -1, -1)
        decoder_dim = decoder_tokens.shape[-1]
        visible_positions = positions[visible].reshape(batch, -1, decoder_dim)
        masked_positions = positions[bool_masked_pos].reshape(batch, -1, decoder_dim)
        decoder_input = torch.cat(
            (decoder_tokens + visible_positions, self.mask_token.to(decoder_tokens.dtype) + masked_positions), dim=1
        )
        decoded_tokens, logits = self.decoder(decoder_input, num_masked)

        with torch.no_grad():
            embed = self.encoder.patch_embed
            targets, pixels = loss_targets(videos, embed.tubelet_size, embed.patch_size, self.norm_pix_loss)
            labels = targets[bool_masked_pos].reshape(batch, num_masked, -1)
        loss = F.mse_loss(logits.float(), labels)
        if not return_outputs:
            return loss, logits
        order = bool_masked_pos.int().argsort(dim=1, stable=True)  # visible, then masked, each in token order
        keep = self.seq_length - num_masked
        intermediates = dict(
            patches=self.patchify(videos),
            patch_embedding=patch_embedding,
            encoded_tokens=encoded_tokens,
            decoder_input=decoder_input,
            decoded_tokens=decoded_tokens,
        )
        masked_pixels = pixels[bool_masked_pos].reshape(batch, num_masked, -1)
        return MAEOutput(loss, logits, masked_pixels, order[:, keep:], order[:, :keep], intermediates)


class VisionTransformer(Encoder):
    """MCG-NJU's fine-tuning VisionTransformer (keys `patch_embed.proj`, `blocks.{i}`, `norm` or `fc_norm`, `head`),
    the function of transformers' VideoMAEForVideoClassification: pool 'mean' normalises the mean token (`fc_norm`,
    eps 1e-5 as transformers' plain nn.LayerNorm), 'first' takes the first token after the final norm. Evaluation
    only: fine-tuning runs in Flax (mae-finetune)."""

    family = 'videomae'

    def __init__(self, *, num_classes, pool='mean', **encoder):
        if pool not in ('mean', 'first'):
            raise ValueError(f"pool must be 'mean' or 'first', got {pool!r}")
        super().__init__(**(encoder | {'use_mean_pooling': pool == 'mean'}))
        self.fc_norm = nn.LayerNorm(self.patch_embed.proj.out_channels) if pool == 'mean' else None
        self.head = nn.Linear(self.patch_embed.proj.out_channels, num_classes)

    def forward_features(self, videos):
        _, tokens = self.embed(videos)
        tokens = super().forward(tokens)
        return tokens[:, 0] if self.fc_norm is None else self.fc_norm(tokens.mean(dim=1))

    def forward(self, videos):
        return self.head(self.forward_features(videos))

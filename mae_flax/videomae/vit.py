"""MCG-NJU/VideoMAE's fine-tuning model (`modeling_finetune.VisionTransformer`) in Flax NNX: the VideoMAE encoder with
a classification head, videos (b, t, h, w, c); the function of transformers' VideoMAEForVideoClassification.

As upstream: the same tubelet embedding, fixed sinusoid positions (a constant, as upstream's plain tensor) and
blocks as the pretraining encoder; pool 'mean' (fine-tuning's, transformers' use_mean_pooling) averages the tokens
and normalises the average (`fc_norm`, eps 1e-5 as transformers' plain nn.LayerNorm; no final `norm`), 'first' takes
the first token after the final `norm` (transformers' use_mean_pooling=False: VideoMAE has no cls token). Also:
per-sample drop path, linear in depth up to `drop_path_rate`; `head_norm` (linear probing's BatchNorm without affine
parameters before the head); a head initialised at zero (`head_std` 0) or from a truncated normal. Its parameters
carry MCG-NJU's keys (mae_flax.videomae.table).
"""

import jax.numpy as jnp

from mae_flax.layers import drop_path_rate as block_rate
from mae_flax.layers import head_batch_norm, head_linear, torch_layer_norm
from mae_flax.videomae.mae import Encoder

POOLS = ('mean', 'first')


class VisionTransformer(Encoder):
    family = 'videomae'

    def __init__(
        self,
        *,
        num_classes,
        pool='mean',
        drop_path_rate=0.0,
        head_norm=False,
        head_std=0.0,
        dtype=None,
        rngs,
        **encoder,
    ):
        if pool not in POOLS:
            raise ValueError(f'pool must be one of {POOLS}, got {pool!r}')
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes must be a positive integer, got {num_classes!r}')
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate!r}')
        depth = encoder['num_hidden_layers']
        super().__init__(
            **(encoder | {'use_mean_pooling': pool == 'mean'}),
            block_rate=(lambda index: block_rate(drop_path_rate, index, depth)) if drop_path_rate > 0 else None,
            dtype=dtype,
            rngs=rngs,
        )
        self.pool, self.num_classes = pool, num_classes
        width = self.hidden_size
        self.fc_norm = torch_layer_norm(width, eps=1e-5, dtype=dtype, rngs=rngs) if pool == 'mean' else None
        self.head_norm = head_batch_norm(width, rngs=rngs) if head_norm else None
        self.head = head_linear(width, num_classes, head_std, dtype=dtype, rngs=rngs)

    def features(self, videos):
        """(b, D): the pooled, normalised representation the head sees (before head_norm)."""
        _, _, tokens = self.embed(videos)
        tokens = super().__call__(tokens)  # (b, n, D)
        return tokens[:, 0] if self.fc_norm is None else self.fc_norm(tokens.mean(axis=1))

    def head_logits(self, features):
        """The head on (b, D) features: head_norm (if any), then the Linear; float32 logits."""
        if self.head_norm is not None:
            features = self.head_norm(features.astype(jnp.float32))
        return self.head(features).astype(jnp.float32)

    def __call__(self, videos):
        return self.head_logits(self.features(videos))

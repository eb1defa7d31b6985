"""The vit-pytorch family's facts that both backends need: its keywords, its masking convention, how to tell its
state dicts apart, and the upgrade of checkpoints written before vit-pytorch's 2-D change."""

import warnings

from mae_core import fields
from mae_core.masking import VIT_PYTORCH

NAME = 'vit_pytorch'
MASKING = VIT_PYTORCH  # the smallest noise is masked, int(ratio * n) patches

# the ViT's keywords that shape the function (dropout does not), with their checks; vit-pytorch's defaults
# where it has them, plus layer_norm_eps (torch's 1e-5, which vit-pytorch uses throughout)
ENCODER_FIELDS = {
    'image_size': fields.size,
    'patch_size': fields.size,
    'num_classes': fields.non_negative_int,
    'dim': fields.positive_int,
    'depth': fields.positive_int,
    'heads': fields.positive_int,
    'mlp_dim': fields.positive_int,
    'pool': fields.choice('cls', 'mean'),
    'channels': fields.positive_int,
    'dim_head': fields.positive_int,
    'layer_norm_eps': fields.positive_float,
}
ENCODER_DEFAULTS = {'num_classes': 0, 'pool': 'cls', 'channels': 3, 'dim_head': 64, 'layer_norm_eps': 1e-5}
MAE_FIELDS = {
    'decoder_dim': fields.positive_int,
    'masking_ratio': fields.ratio,
    'decoder_depth': fields.positive_int,
    'decoder_heads': fields.positive_int,
    'decoder_dim_head': fields.positive_int,
    'norm_pix_loss': fields.boolean,
}
MAE_DEFAULTS = {
    'masking_ratio': 0.75,
    'decoder_depth': 1,
    'decoder_heads': 8,
    'decoder_dim_head': 64,
    'norm_pix_loss': False,
}


LAYOUTS = ('vit_pytorch',)  # one: vit-pytorch's own state_dict


def detect(keys):
    """(kind, layout): kind 'MAE' or 'ViT' if `keys` are a vit-pytorch / mae_torch state dict's, else None."""
    keys = set(keys)
    if {'mask_token', 'encoder.pos_embedding', 'encoder.to_patch_embedding.2.weight'} <= keys:
        return 'MAE', 'vit_pytorch'
    if {'pos_embedding', 'to_patch_embedding.2.weight'} <= keys and 'mask_token' not in keys:
        return 'ViT', 'vit_pytorch'
    return None


def upgrade_legacy(state_dict, prefix, pool):
    """vit-pytorch checkpoints from before its 2-D change hold pos_embedding (1, n + 1, d) and cls_token (1, 1, d);
    rewrites them in place as today's (n + num_cls, d) and (num_cls, d). Works on torch tensors and numpy arrays.

    Legacy ViTs always had a cls token; a mean-pool model now has none, so its cls token and position row go."""
    pos_key, cls_key = f'{prefix}pos_embedding', f'{prefix}cls_token'
    if pos_key not in state_dict or state_dict[pos_key].ndim != 3 or cls_key not in state_dict:
        return
    pos_embedding = state_dict[pos_key][0]
    cls_token = state_dict[cls_key].reshape(-1, state_dict[cls_key].shape[-1])
    if pool == 'mean':
        warnings.warn(
            'legacy mean-pool checkpoint: its cls token is dropped. MAE is unchanged; ViT logits differ slightly, '
            'since the legacy model also averaged the cls token',
            stacklevel=3,
        )
        pos_embedding, cls_token = pos_embedding[1:], cls_token[:0]
    state_dict[pos_key], state_dict[cls_key] = pos_embedding, cls_token


# the names under which this family's keywords hold what every family has
IMAGE_SIZE, PATCH_SIZE, CHANNELS = 'image_size', 'patch_size', 'channels'
MASKING_RATIO, NORM_PIX_LOSS = 'masking_ratio', 'norm_pix_loss'

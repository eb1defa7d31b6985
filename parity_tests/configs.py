"""The configurations the parity suite runs: together they take every branch of both backends."""

from parity_tests.pairs import Config

CONFIGS = {
    'cls': Config(pool='cls'),
    'mean': Config(pool='mean'),
    'one_channel': Config(channels=1),
    # non-square images and patches: a 4 x 3 grid of 8 x 16 patches
    'non_square': Config(image_size=(32, 48), patch_size=(8, 16)),
    # decoder_dim == dim: enc_to_dec is the identity
    'decoder_dim_is_dim': Config(decoder_dim=48, decoder_dim_head=24),
    # heads == 1 and dim_head == dim: to_out is the identity, in the encoder and the decoder
    'single_head': Config(heads=1, dim_head=48, decoder_heads=1, decoder_dim_head=32),
    'mask_half': Config(masking_ratio=0.5),
    'mask_most': Config(masking_ratio=0.9),
    'norm_pix_loss': Config(norm_pix_loss=True),
}

IMAGE_KINDS = ('normal', 'low_variance', 'offset')

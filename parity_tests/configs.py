"""The configurations the parity suite runs: together they take every branch of both backends."""

from parity_tests.pairs import official_spec, small_spec, video_spec

CONFIGS = {
    'cls': small_spec(pool='cls'),
    'mean': small_spec(pool='mean'),
    'one_channel': small_spec(channels=1),
    # non-square images and patches: a 4 x 3 grid of 8 x 16 patches
    'non_square': small_spec(image_size=(32, 48), patch_size=(8, 16)),
    # decoder_dim == dim: enc_to_dec is the identity
    'decoder_dim_is_dim': small_spec(decoder_dim=48, decoder_dim_head=24),
    # heads == 1 and dim_head == dim: to_out is the identity, in the encoder and the decoder
    'single_head': small_spec(heads=1, dim_head=48, decoder_heads=1, decoder_dim_head=32),
    'mask_half': small_spec(masking_ratio=0.5),
    'mask_most': small_spec(masking_ratio=0.9),
    'norm_pix_loss': small_spec(norm_pix_loss=True),
    # the official family (facebookresearch/mae): its own masking convention, cls token through both halves,
    # fixed sin-cos positions
    'official': official_spec(),
    # 0.7 of 16 patches: vit-pytorch would mask int(11.2) = 11, facebookresearch/mae keeps int(4.8) = 4 (masks 12)
    'official_fractional_mask': official_spec(mask_ratio=0.7),
    # gray, non-square images and patches (upstream's patchify hard-codes 3 channels), HuggingFace's eps
    'official_one_channel_non_square': official_spec(
        in_chans=1, img_size=(32, 48), patch_size=(8, 16), layer_norm_eps=1e-12
    ),
    'official_norm_pix_loss': official_spec(norm_pix_loss=True, decoder_mlp_ratio=2.0),
    # the video family (VideoMAE): tubelets, tube masking, q and v biases, per-tubelet norm_pix targets; the other
    # branches against transformers in parity_tests/test_videomae.py
    'videomae': video_spec(),
}

IMAGE_KINDS = ('normal', 'low_variance', 'offset')

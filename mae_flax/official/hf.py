"""HuggingFace ViTMAE folders (config.json, model.safetensors, preprocessor_config.json) <-> official-family
ModelSpecs. transformers is not needed: these are plain JSON and safetensors files."""

from mae_core.errors import UsageError
from mae_core.fields import pair

HF_MODEL_TYPE = 'vit_mae'


def given_from_config(config, image_processor, source):
    """{field: (value, source)} from a ViTMAEConfig's JSON (and its image processor's, for the pixel statistics),
    as official.infer takes them; a UsageError for what this family does not compute."""
    if config.get('model_type') != HF_MODEL_TYPE:
        raise UsageError(f'{source} is a {config.get("model_type")!r} config, expected {HF_MODEL_TYPE!r} (ViTMAE)')
    if config.get('hidden_act', 'gelu') != 'gelu' or not config.get('qkv_bias', True):
        raise UsageError(f'{source}: hidden_act {config.get("hidden_act")!r} / qkv_bias {config.get("qkv_bias")}: '
                         'facebookresearch/mae uses exact GELU and a qkv bias')  # fmt: skip
    hidden, decoder_hidden = config['hidden_size'], config['decoder_hidden_size']
    image, patch = pair(config['image_size']), pair(config['patch_size'])
    values = dict(
        img_size=image[0] if image[0] == image[1] else tuple(image),
        patch_size=patch[0] if patch[0] == patch[1] else tuple(patch),
        in_chans=config.get('num_channels', 3),
        embed_dim=hidden,
        depth=config['num_hidden_layers'],
        num_heads=config['num_attention_heads'],
        mlp_ratio=config['intermediate_size'] / hidden,
        layer_norm_eps=config.get('layer_norm_eps', 1e-12),
        decoder_embed_dim=decoder_hidden,
        decoder_depth=config['decoder_num_hidden_layers'],
        decoder_num_heads=config['decoder_num_attention_heads'],
        decoder_mlp_ratio=config['decoder_intermediate_size'] / decoder_hidden,
        mask_ratio=config.get('mask_ratio', 0.75),
        norm_pix_loss=config.get('norm_pix_loss', False),
    )
    if image_processor and image_processor.get('do_normalize', True):
        values |= dict(pixel_mean=tuple(image_processor['image_mean']), pixel_std=tuple(image_processor['image_std']))
    return {field: (value, f'from {source}') for field, value in values.items()}


def config_from_spec(spec, encoder_only=False):
    """(config.json, preprocessor_config.json) contents for ViTMAEForPreTraining.from_pretrained (ViTMAEModel's for
    an encoder alone: the decoder's fields say what an MAE built on it would have)."""
    encoder, mae = spec.encoder, spec.mae
    config = dict(
        architectures=['ViTMAEModel' if encoder_only else 'ViTMAEForPreTraining'],
        model_type=HF_MODEL_TYPE,
        image_size=encoder['img_size'],
        patch_size=encoder['patch_size'],
        num_channels=encoder['in_chans'],
        hidden_size=encoder['embed_dim'],
        num_hidden_layers=encoder['depth'],
        num_attention_heads=encoder['num_heads'],
        intermediate_size=int(encoder['embed_dim'] * encoder['mlp_ratio']),
        hidden_act='gelu',
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.02,
        layer_norm_eps=encoder['layer_norm_eps'],
        qkv_bias=True,
        decoder_hidden_size=mae['decoder_embed_dim'],
        decoder_num_hidden_layers=mae['decoder_depth'],
        decoder_num_attention_heads=mae['decoder_num_heads'],
        decoder_intermediate_size=int(mae['decoder_embed_dim'] * mae['decoder_mlp_ratio']),
        mask_ratio=mae['mask_ratio'],
        norm_pix_loss=mae['norm_pix_loss'],
    )
    height, width = spec.image_size
    processor = dict(
        image_processor_type='ViTImageProcessor',
        do_resize=True,
        size=dict(height=height, width=width),
        resample=3,  # bicubic
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(spec.pixel_mean),
        image_std=list(spec.pixel_std),
    )
    return config, processor

"""HuggingFace VideoMAE folders (config.json, model.safetensors, preprocessor_config.json) <-> videomae-family
ModelSpecs. transformers is not needed: these are plain JSON and safetensors files."""

from mae_core import videomae
from mae_core.errors import UsageError
from mae_core.fields import compact, pair

HF_MODEL_TYPE = 'videomae'
# transformers' decoder norm is a plain nn.LayerNorm: torch's default eps, whatever layer_norm_eps says
HF_DECODER_NORM_EPS = 1e-5


def given_from_config(config, image_processor, source):
    """{field: (value, source)} from a VideoMAEConfig's JSON (and its image processor's, for the pixel statistics),
    as videomae.infer takes them; a UsageError for what this family does not compute."""
    if config.get('model_type') != HF_MODEL_TYPE:
        raise UsageError(f'{source} is a {config.get("model_type")!r} config, expected {HF_MODEL_TYPE!r} (VideoMAE)')
    if config.get('hidden_act', 'gelu') != 'gelu':
        raise UsageError(f'{source}: hidden_act {config.get("hidden_act")!r}: VideoMAE uses exact GELU')
    patch = pair(config.get('patch_size', videomae.ENCODER_DEFAULTS['patch_size']))
    if patch[0] != patch[1]:
        raise UsageError(f"{source}: patch_size {list(patch)}: transformers' VideoMAE loss takes square patches")
    # a saved config.json holds only what differs from VideoMAEConfig's defaults, which are this family's
    defaults = videomae.ENCODER_DEFAULTS | videomae.MAE_DEFAULTS
    values = {field: config.get(field, default) for field, default in defaults.items() if field != 'mask_ratio'}
    values |= dict(
        image_size=compact(pair(config.get('image_size', defaults['image_size']))),
        patch_size=patch[0],
        # transformers 5 says qv_bias, transformers 4 (and the Hub's configs) qkv_bias
        qkv_bias=config.get('qv_bias', config.get('qkv_bias', True)),
        decoder_norm_eps=HF_DECODER_NORM_EPS,
    )
    if image_processor and image_processor.get('do_normalize', True):
        values |= dict(pixel_mean=tuple(image_processor['image_mean']), pixel_std=tuple(image_processor['image_std']))
    return {field: (value, f'from {source}') for field, value in values.items()}


def config_from_spec(spec, encoder_only=False):
    """(config.json, preprocessor_config.json) contents for VideoMAEForPreTraining.from_pretrained (VideoMAEModel's
    for an encoder alone, the decoder's fields saying what an MAE built on it would have); a UsageError for what
    transformers cannot say."""
    encoder, mae = spec.encoder, spec.mae or videomae.MAE_DEFAULTS
    encoder_only = encoder_only or spec.mae is None
    if mae['decoder_norm_eps'] != HF_DECODER_NORM_EPS:
        raise UsageError(
            f"decoder_norm_eps {mae['decoder_norm_eps']}: transformers' VideoMAE decoder norm has eps "
            f'{HF_DECODER_NORM_EPS}, and no config field to change it'
        )
    image = encoder['image_size']
    config = dict(
        architectures=['VideoMAEModel' if encoder_only else 'VideoMAEForPreTraining'],
        model_type=HF_MODEL_TYPE,
        image_size=list(image) if isinstance(image, tuple) else image,
        **{field: encoder[field] for field in videomae.ENCODER_FIELDS if field != 'image_size'},
        hidden_act='gelu',
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.02,
        **{field: mae[field] for field in videomae.MAE_FIELDS if field not in ('decoder_norm_eps', 'mask_ratio')},
    )
    height, width = pair(image)
    processor = dict(
        image_processor_type='VideoMAEImageProcessor',
        do_resize=True,
        size=dict(shortest_edge=min(height, width)),
        resample=2,  # bilinear
        do_center_crop=True,
        crop_size=dict(height=height, width=width),
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(spec.pixel_mean),
        image_std=list(spec.pixel_std),
    )
    return config, processor

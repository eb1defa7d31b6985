"""The classifier in torch layout: timm's VisionTransformer keys (official family) or vit-pytorch's ViT keys, the
linear probe's BatchNorm folded into the head, as `best.safetensors` with its description beside it."""

import json
from pathlib import Path

import numpy as np

from mae_core.spec import ModelSpec
from mae_flax import families
from mae_flax.convert import to_torch_state_dict
from mae_flax.files import atomic_path
from mae_flax.files.models import spec_path
from mae_flax.files.weights import save_state_dict_file

BEST = 'best.safetensors'  # in the workdir: the best classifier so far, torch layout; its description in BEST.json


def torch_state_dict(model):
    """The classifier's torch state dict (timm's VisionTransformer keys, or vit-pytorch's ViT keys): the linear
    probe's BatchNorm, an affine map in evaluation, folded into the head (in float64), so that timm's and
    vit-pytorch's own classes load it with strict=True."""
    family = families.of(model)
    state_dict = to_torch_state_dict(model)
    if getattr(model, 'head_norm', None) is not None:
        norm = model.head_norm
        mean, var = np.asarray(norm.mean[...], np.float64), np.asarray(norm.var[...], np.float64)
        inv = 1 / np.sqrt(var + norm.epsilon)
        weight = state_dict[f'{family.head}.weight'].astype(np.float64)  # (classes, dim)
        bias = state_dict[f'{family.head}.bias'].astype(np.float64)
        state_dict[f'{family.head}.weight'] = (weight * inv).astype(np.float32)
        state_dict[f'{family.head}.bias'] = (bias - weight @ (mean * inv)).astype(np.float32)
    return state_dict


def description(config, spec, classes, pool, **extra):
    """What best.safetensors.json says: how to rebuild the classifier in torch, and what it was trained on."""
    return dict(
        classifier=dict(family=spec.family, num_classes=len(classes), pool=pool, classes=list(classes)),
        model=spec.to_dict(),
        mode=config.mode,
        **extra,
    )


def torch_classifier(path):
    """The mae_torch classifier of an exported `best.safetensors` (its description beside it), in eval mode."""
    import safetensors.torch

    path = Path(path)
    described = json.loads(spec_path(path).read_text())
    spec, head = ModelSpec.from_dict(described['model']), described['classifier']
    model = families.get(spec.family).build_classifier_torch(spec, num_classes=head['num_classes'], pool=head['pool'])
    model.load_state_dict(safetensors.torch.load_file(path), strict=True)
    return model.eval()


def export(model, path, described):
    """Writes the classifier's torch state dict to `path` and its description beside it, atomically."""
    with atomic_path(spec_path(path)) as tmp:
        tmp.write_text(json.dumps(described, indent=2) + '\n')
        save_state_dict_file(torch_state_dict(model), path)

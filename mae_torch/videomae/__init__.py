"""The VideoMAE family in torch: MCG-NJU/VideoMAE's pretraining and fine-tuning models under its own keys, the
function of HuggingFace transformers' VideoMAEForPreTraining and VideoMAEForVideoClassification."""

from mae_torch.videomae.mae import VideoMAE, VisionTransformer, patchify


def build(spec):
    """The VideoMAE a ModelSpec of this family describes (the decoder too for an encoder's spec)."""
    return VideoMAE(**spec.encoder, **(spec.mae or {}))


__all__ = ['VideoMAE', 'VisionTransformer', 'build', 'patchify']

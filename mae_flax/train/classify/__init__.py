"""Fine-tuning and linear probing of an MAE encoder (mae-finetune, mae-linprobe): facebookresearch/mae's
main_finetune.py and main_linprobe.py recipes, on mae-train's loop, in Flax, for every model family.

- The classifier is the family's (`Family.build_classifier`): the official family's VisionTransformer (timm's keys;
  pool 'avg' = fc_norm of the mean patch token, fine-tuning's default, or 'token' = the cls token after norm,
  linear probing's), vit-pytorch's own ViT with its mlp_head, or the video family's MCG-NJU VisionTransformer
  (transformers' VideoMAEForVideoClassification) on clips (b, t, h, w, c) (train/data/labeled_video.py).
- Its encoder comes from `--init_from` (a mae-train workdir or any checkpoint mae-convert reads: published
  facebookresearch/mae and HuggingFace weights included), or is randomly initialised without it (the baseline).
- finetune: AdamW with layer-wise lr decay (train/optim.py), drop path, label smoothing, mixup / cutmix
  (`mixup`), warmup then cosine; the head starts at zero.
- linprobe: the encoder frozen, a BatchNorm without affine parameters before the head, LARS, a large batch; the head
  starts from a normal of std 0.01 (main_linprobe.py's): LARS scales each update by the weight's norm, so a zero
  head would never move.
- Evaluation on the whole validation split every `eval_every` steps: top-1, top-5, loss; the best top-1's
  classifier is exported at once to torch (`export`: best.safetensors with best.safetensors.json).

Modules: `task` (the task for the loop, --init_from), `steps` (model, state, step functions), `mixup`, `export`.
"""

from mae_flax.train.classify.export import BEST, torch_classifier
from mae_flax.train.classify.task import COMMANDS, MODES, Classification, train

__all__ = ['BEST', 'COMMANDS', 'MODES', 'Classification', 'torch_classifier', 'train']

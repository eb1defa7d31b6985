"""Files on disk, a module per kind: `paths` (atomic writes, local or remote paths), `weights` (state-dict files:
the one careful reader of .pt/.pth/.safetensors), `hf_folders` (HuggingFace save_pretrained folders), `models`
(a model file or folder <-> a mae_flax model and its ModelSpec). Nothing here imports the training package."""

from mae_flax.files.paths import as_path, atomic_path, is_remote

__all__ = ['as_path', 'atomic_path', 'is_remote']

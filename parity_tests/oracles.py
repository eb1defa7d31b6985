"""The external references the suite checks against, skipping a test cleanly where one is not installed (CI
installs them all)."""

import importlib.util

import pytest

from mae_torch.reference import load_vit_pytorch


def vit_pytorch():
    """vit-pytorch's package with its `vit` and `mae` modules; skips the test when it is not installed."""
    if importlib.util.find_spec('vit_pytorch') is None:
        pytest.skip('vit-pytorch is not installed (pip install --no-deps vit-pytorch); CI installs it')
    return load_vit_pytorch()


def transformers():
    """HuggingFace transformers; skips the test when it is not installed."""
    if importlib.util.find_spec('transformers') is None:
        pytest.skip('transformers is not installed (pip install transformers); CI installs it')
    import transformers

    return transformers

"""vit-pytorch itself, the reference the backends are checked against.

Its package `__init__` imports torchvision (and vit-pytorch's own dependencies pull a CUDA torch), so it is
installed with `--no-deps` and its modules are imported through a bare package object, without the `__init__`.
"""

import importlib.util
import sys
import types

import pytest


def vit_pytorch():
    """The `vit_pytorch` package (its `vit` and `mae` modules loaded); skips the test when it is not installed."""
    spec = importlib.util.find_spec('vit_pytorch')
    if spec is None:
        pytest.skip('vit-pytorch is not installed (pip install --no-deps vit-pytorch); CI installs it')
    if 'vit_pytorch' not in sys.modules:
        package = types.ModuleType('vit_pytorch')
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules['vit_pytorch'] = package
    package = sys.modules['vit_pytorch']
    package.vit = importlib.import_module('vit_pytorch.vit')
    package.mae = importlib.import_module('vit_pytorch.mae')
    return package

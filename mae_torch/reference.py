"""vit-pytorch itself, the reference mae_torch is checked and benchmarked against.

Its package `__init__` imports torchvision (and vit-pytorch's own dependencies pull a CUDA torch), so it is
installed with `--no-deps` and its modules are imported under a package object whose `__init__` never runs.
"""

import importlib
import importlib.util
import sys


def load_vit_pytorch():
    """The `vit_pytorch` package with its `vit` and `mae` modules loaded; ImportError if it is not installed."""
    spec = importlib.util.find_spec('vit_pytorch')
    if spec is None:
        raise ImportError('vit-pytorch is not installed: pip install --no-deps vit-pytorch')
    if 'vit_pytorch' not in sys.modules:
        # the package object, without running its __init__
        sys.modules['vit_pytorch'] = importlib.util.module_from_spec(spec)
    package = sys.modules['vit_pytorch']
    package.vit = importlib.import_module('vit_pytorch.vit')
    package.mae = importlib.import_module('vit_pytorch.mae')
    return package

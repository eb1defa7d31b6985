"""What both backends share, in plain Python and numpy (importing it pulls in neither torch nor JAX).

- `ModelSpec` (spec.py): the one description of a model, written beside every checkpoint and into every run;
- the model contract (contract.py): `MAEOutput` and the call every family's MAE honours;
- masking conventions (masking.py): which end of the sorted noise is masked, and how the count is rounded;
- each family's facts that both backends need (vit_pytorch.py): its keywords, key layout and legacy upgrade.
"""

from mae_core.contract import MAEOutput
from mae_core.errors import UsageError
from mae_core.masking import MaskingConvention
from mae_core.spec import IMAGENET_MEAN, IMAGENET_STD, SIZES, ModelSpec, decode_variant

__all__ = [
    'IMAGENET_MEAN',
    'IMAGENET_STD',
    'MAEOutput',
    'MaskingConvention',
    'ModelSpec',
    'SIZES',
    'UsageError',
    'decode_variant',
]

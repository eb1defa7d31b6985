"""python -m parity_tests [pytest options]: the parity suite, run against the installed mae_torch and mae_flax.

For your own CI: `pip install "twin-mae[torch,test]"` and, for the vit-pytorch oracle, `pip install --no-deps
vit-pytorch` (its tests skip without it). Extra arguments go to pytest, e.g. `-x -k gradients`.
"""

import os
import sys
from pathlib import Path


def main(argv=None):
    try:
        import pytest
        import torch  # noqa: F401
    except ImportError as error:
        sys.exit(f'python -m parity_tests needs pytest and torch: pip install "twin-mae[torch,test]" ({error})')
    suite = Path(__file__).parent
    # the suite's own directory and no ini file of whatever project it is run from
    options = ['--rootdir', str(suite), '-c', os.devnull, '-p', 'no:cacheprovider']
    return pytest.main([*options, str(suite), *(sys.argv[1:] if argv is None else argv)])


if __name__ == '__main__':
    sys.exit(main())

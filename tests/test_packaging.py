"""What each install gives: the model library without torch or the training stack, mae_core without either
framework, and the parity suite as `python -m parity_tests` from anywhere."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# what the [train] extra adds (flax itself brings optax and orbax)
TRAINING_STACK = ('grain', 'ml_collections', 'skimage', 'tensorboardX')


def _python(code, cwd=REPO):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_the_model_library_and_commands_import_without_the_training_stack():
    # `pip install twin-mae`: jax, flax, einops, numpy, safetensors, pillow; no torch, no [train] extra
    blocked = ''.join(f'sys.modules[{name!r}] = None\n' for name in (*TRAINING_STACK, 'torch'))
    code = (
        f'import sys\n{blocked}'
        'import mae_flax, mae_flax.convert, mae_flax.model_files, mae_flax.parity\n'
        'import mae_flax.cli.convert, mae_flax.cli.parity, mae_flax.cli.reconstruct, mae_flax.cli.export\n'
        'print("ok")\n'
    )
    result = _python(code)
    assert result.stdout.strip() == 'ok', result.stderr


def test_mae_core_imports_neither_framework():
    code = 'import sys\nimport mae_core\nprint(sorted(m for m in ("torch", "jax", "flax") if m in sys.modules))\n'
    result = _python(code)
    assert result.stdout.strip() == '[]', result.stderr


def test_the_parity_suite_runs_as_a_module_from_anywhere(tmp_path):
    # a user's CI: another project's folder, the installed package's suite
    command = [sys.executable, '-m', 'parity_tests', '-q', '-k', 'test_loss_matches and cls-normal']
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '1 passed' in result.stdout

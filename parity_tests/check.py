"""A parity check of a small MAE: the two backends' losses and predictions on the same weights, images and noise.

    python -m parity_tests.check

Exits 1 if any difference is beyond the suite's float32 tolerances (parity_tests/tolerances.py).
"""

import sys

import jax
import torch
from flax import nnx

from mae_flax.parity import scaled_error
from parity_tests import tolerances
from parity_tests.configs import IMAGE_KINDS
from parity_tests.pairs import images, mae_pair, noise, small_spec, to_jax, to_numpy


def main():
    jax.config.update('jax_default_matmul_precision', 'highest')
    config = small_spec(pool='cls')
    torch_model, flax_model = mae_pair(config)
    forward = nnx.jit(lambda model, x, n: model(x, noise=n, return_outputs=True))
    print(
        f'MAE {config.image_size} px, patch {config.patch_size}, dim {config.encoder["dim"]}, '
        f'depth {config.encoder["depth"]}, pool {config.encoder["pool"]}'
    )
    print(f'{"images":<14}{"torch loss":>14}{"flax loss":>14}{"rel. diff":>11}{"pred. diff":>12}  ok')
    ok = True
    for kind in IMAGE_KINDS:
        img, masking_noise = images(kind, config), noise(config)
        with torch.no_grad():
            expected = torch_model(img, noise=masking_noise, return_outputs=True)
        actual = forward(flax_model, to_jax(img), to_jax(masking_noise))
        loss_diff = abs(float(actual.loss) - expected.loss.item()) / expected.loss.item()
        pred_diff = scaled_error(to_numpy(expected.pred_pixel_values), actual.pred_pixel_values)
        passed = loss_diff <= tolerances.LOSS[kind] and pred_diff <= tolerances.PREDICTIONS[kind]
        ok &= passed
        print(
            f'{kind:<14}{expected.loss.item():>14.7f}{float(actual.loss):>14.7f}{loss_diff:>11.1e}{pred_diff:>12.1e}  {"yes" if passed else "NO"}'
        )
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())

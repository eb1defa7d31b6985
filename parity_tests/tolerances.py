"""How close the two backends must be in float32, and why.

Both compute in IEEE float32 with different summation orders (oneDNN/ATen vs XLA/Eigen), so each stage differs
by a few ulps times the growth of rounding through its layers. Errors are measured against the stage's own
scale: max |torch - flax| <= tolerance * max |torch| (mae_flax.parity.scaled_error, which mae-parity uses too).

- 'normal' and 'low_variance' images: observed <= 9e-7 at every stage on CPU; 1e-5 leaves 10x headroom and is
  still 100x below what a tanh GELU (~1e-3), a LayerNorm eps of 1e-6 on low-variance inputs (~1e-1) or a TF32
  matmul (~1e-3) produce. parity_tests/test_tolerances.py proves each of those fails.
- 'offset' images (50 + 0.01 * randn): the first LayerNorm subtracts a mean of 50 from values 50 +- 0.01, so a
  one-ulp rounding of either (4e-6) is 4e-4 of the normalised value: condition number |mean| / std = 5000 times
  float32's epsilon. Observed <= 9e-4 on the embeddings and 5e-5 on predictions; 5e-3 and 5e-4 leave ~5-10x
  headroom, and a one-pass (fast) variance, which loses every digit here, still fails by orders of magnitude.
- loss: a mean of ~10^3 squared errors; observed <= 5e-7 relative (3e-6 with norm_pix_loss on offset images,
  whose per-patch standardisation has the same conditioning as above).
"""

STAGE = {'normal': 1e-5, 'low_variance': 1e-5, 'offset': 5e-3}
PREDICTIONS = {'normal': 1e-5, 'low_variance': 1e-5, 'offset': 5e-4}
LOSS = {'normal': 2e-6, 'low_variance': 2e-6, 'offset': 2e-5}

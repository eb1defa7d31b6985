"""Training-step benchmarks: mae_flax against mae_torch and vit-pytorch's MAE, side by side in one process."""

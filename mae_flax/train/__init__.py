"""MAE pretraining with mae_flax on one CPU up to a TPU pod: `mae-train`, `python -m mae_flax.train`."""

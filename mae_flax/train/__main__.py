"""`python -m mae_flax.train`: mae-train."""

from mae_flax.train.main import run

run()

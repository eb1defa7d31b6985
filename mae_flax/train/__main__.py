from mae_flax.train.main import run

run()

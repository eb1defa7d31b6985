"""The trainer's loop against its bare step: images/s of `pretrain.train` (the data pipeline, the host -> device
copy of each batch, checkpoint decisions, progress, metrics fetched every `log_every` steps) over images/s of the
same compiled step (steps.StepProgram) called in a bare Python loop on one batch already on the device.

    python -m benchmarks.loop_overhead --steps 300 --out benchmarks/results/loop_overhead-cpu.json

The model is the `tiny` config's; the data the embedded photographs (random-resized crops of large photos) and a
32px uint8 array (crops that cost next to nothing: the loop's own work). Each runs with log_every=50 (the metrics
stay on the device between log steps) and with log_every=1 (a fetch, so a wait for the device, after every step:
what the loop did before). Each figure is the trainer's own steady-state rate (its summary, from the
second step on), and the bare loop is timed before and after them, the mean of the two taken: the machine's load
moves all of them alike. Target: >= 0.97 of the bare step.
"""

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mae_flax.configs import mae as mae_configs
from mae_flax.files import atomic_path
from mae_flax.train import model_state, pretrain, sharding
from mae_flax.train.steps import pretrain_program


def config_for(steps, log_every, source='default'):
    config = mae_configs.get_config('tiny')
    config.update(total_steps=steps, log_every=log_every, image_every=10 * steps, num_eval_images=0)
    config.data.source = source
    config.checkpoint.every_steps = 10 * steps  # only the final, forced one
    config.compilation_cache = ''
    return config


def bare_images_per_sec(config, steps):
    mesh = sharding.make_mesh(1, 1)
    program = pretrain_program(config, mesh)
    state = jax.jit(program.init, out_shardings=program.shardings)()
    size = model_state.model_spec(config).image_size
    batch = jax.device_put(jnp.zeros((config.batch_size, *size, 3), jnp.uint8), sharding.batch_sharding(mesh))
    state, metrics = program.train_step(state, batch)  # compiles
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = program.train_step(state, batch)
    jax.block_until_ready((state, metrics))
    return steps * config.batch_size / (time.perf_counter() - start)


def loop_images_per_sec(config):
    with tempfile.TemporaryDirectory() as workdir:
        return pretrain.train(config, Path(workdir) / 'run')['images_per_sec']


def benchmark(steps=300, log_every=50):
    logging.set_verbosity(logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        # images already at the model's 32px: the crop costs next to nothing, what is left is the loop's own work
        small = Path(folder) / 'images32.npy'
        np.save(small, np.random.default_rng(0).integers(0, 256, (1024, 32, 32, 3), dtype=np.uint8))
        before = bare_images_per_sec(config_for(steps, log_every), steps)
        loops = {}
        for name, source in (('photos', 'default'), ('32px array', str(small))):
            for every in (log_every, 1):
                loops[f'{name}, log_every={every}'] = loop_images_per_sec(config_for(steps, every, source))
        after = bare_images_per_sec(config_for(steps, log_every), steps)
    bare = (before + after) / 2
    return dict(
        date=datetime.date.today().isoformat(),
        jax=jax.__version__,
        cpus=len(os.sched_getaffinity(0)),
        steps=steps,
        batch_size=config_for(steps, log_every).batch_size,
        bare_images_per_sec=[before, after],
        loop_images_per_sec=loops,
        loop_over_bare={name: value / bare for name, value in loops.items()},
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--log-every', type=int, default=50)
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    results = benchmark(args.steps, args.log_every)
    print(json.dumps(results, indent=2))
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
    main()

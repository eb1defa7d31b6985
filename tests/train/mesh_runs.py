"""Trains the smoke config on meshes (data x fsdp) 8x1 and 4x2 in one 8-device process, and the classification smoke
configs (fine-tuning, linear probing) on 4x2; writes their losses, and how much of the parameters fsdp=2 shards, to
OUT/losses.json. Run by the tests: python tests/train/mesh_runs.py OUT"""

import functools
import json
import math
import sys
from pathlib import Path

import jax
from absl import logging

from mae_flax.configs import classify as classify_configs
from mae_flax.configs import mae
from mae_flax.train import classify, model_state, optim, pretrain, sharding, steps
from tests.train.conftest import losses

logging.set_verbosity(logging.WARNING)
out = Path(sys.argv[1])
results = {}
for data, fsdp in ((8, 1), (4, 2)):
    config = mae.get_config('smoke')
    config.mesh.update(data=data, fsdp=fsdp, fsdp_min_size=0)  # the smoke model's tensors are all small
    config.num_eval_images = 0  # the losses are the point: skip compiling the eval step
    pretrain.train(config, out / f'{data}x{fsdp}')
    results[f'{data}x{fsdp}'] = losses(out / f'{data}x{fsdp}')

for variant in ('smoke', 'smoke_linprobe'):
    classify_config = classify_configs.get_config(variant)
    classify_config.mesh.update(data=4, fsdp=2, fsdp_min_size=0)
    classify_config.compilation_cache = ''
    classify.train(classify_config, out / variant)
    results[variant] = losses(out / variant)

tx, _ = optim.make_optimizer(config)
abstract_state = jax.eval_shape(functools.partial(steps.init_state, config, tx))
shardings = sharding.state_shardings(abstract_state, sharding.make_mesh(4, 2), model_state.fsdp_min_size(config))
sizes = [
    (math.prod(x.shape), 'fsdp' in s.spec)
    for x, s in zip(jax.tree.leaves(abstract_state['params']), jax.tree.leaves(shardings['params']), strict=True)
]
results['fsdp_sharded_fraction'] = sum(size for size, sharded in sizes if sharded) / sum(size for size, _ in sizes)
(out / 'losses.json').write_text(json.dumps(results))

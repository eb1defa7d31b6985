"""The main job: `mae-train --workdir DIR` writes checkpoints, metrics, TensorBoard events and pictures."""

import json
import math

import numpy as np
from PIL import Image

from mae_core import ModelSpec
from tests.train.conftest import losses


def test_run_writes_checkpoints_metrics_and_pictures(smoke_run):
    workdir, result = smoke_run
    # smoke: 12 steps, a checkpoint every 4, keep 3
    assert sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()) == [4, 8, 12]
    assert sorted(losses(workdir)) == list(range(1, 13))
    assert all(math.isfinite(loss) for loss in losses(workdir).values())
    records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
    assert {'loss', 'lr', 'grad_norm', 'images_per_sec'} <= set(records[-1])
    assert list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
    # the run's model description, in the one form every tool reads and writes
    model = json.loads((workdir / 'config.json').read_text())['model']
    assert model == ModelSpec.from_dict(model).to_dict() and model['encoder']['image_size'] == 16
    assert 'done: step 12 (12 this run), mean loss of the first / last 1 steps' in result.stdout
    # a newcomer's log: no error-looking probing for accelerators the machine does not have
    assert 'libtpu' not in result.stderr and 'Traceback' not in result.stderr


def test_reconstruction_grids_show_four_panels_per_image(smoke_run):
    workdir, _ = smoke_run
    assert sorted(p.name for p in (workdir / 'images').glob('*.png')) == [
        'step_000000.png',
        'step_000006.png',
        'step_000012.png',
    ]
    grid = np.asarray(Image.open(workdir / 'images' / 'step_000012.png'))
    # smoke: 4 eval images of 16px drawn at 8x -> (4 * 128, 4 panels * 128, rgb)
    assert grid.shape == (512, 512, 3)
    original, masked = grid[:, :128].astype(int), grid[:, 128:256].astype(int)
    assert np.abs(original - masked).mean() > 1  # the masked panel hides something
    assert Image.open(workdir / 'loss_curve.png').size == (2 * 720, 420)  # the loss, and the held-out figure


def test_learning_rate_follows_warmup_then_cosine(smoke_run):
    workdir, _ = smoke_run
    lr = {
        r['step']: r['lr'] for r in map(json.loads, (workdir / 'metrics.jsonl').read_text().splitlines()) if 'lr' in r
    }
    peak = 1e-2 * 16 / 256  # smoke: base_lr * batch / 256, 2 warmup steps; lr is logged for the step's update
    np.testing.assert_allclose([lr[1], lr[2], lr[3]], [0.0, peak / 2, peak], rtol=1e-6)
    assert lr[12] < lr[8] < lr[4] < peak

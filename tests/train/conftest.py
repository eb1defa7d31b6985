"""Training runs shared by the tests: each is a separate process, so it can have its own device count
(XLA_FLAGS must be set before jax is imported) and be killed for real."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMOKE = f'--config={REPO}/mae_flax/configs/mae.py:smoke'


_COMPILATION_CACHE = {}


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent XLA cache for the session's runs: a program compiles once, not once per process. Its folder,
    for a run in the test's own process (config.compilation_cache)."""
    _COMPILATION_CACHE['dir'] = str(tmp_path_factory.mktemp('jax_cache'))
    return _COMPILATION_CACHE['dir']


def environment(devices=1):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
    if 'dir' in _COMPILATION_CACHE:
        env['JAX_COMPILATION_CACHE_DIR'] = _COMPILATION_CACHE['dir']
        env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
        env['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'
    return env


def start(args, devices=1, script=None):
    command = [sys.executable, *(script or ['-m', 'mae_flax.train']), *args]
    return subprocess.Popen(
        command, cwd=REPO, env=environment(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process, timeout=240):
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def train(args, devices=1, script=None, check=True):
    result = finish(start(args, devices, script))
    if check and result.returncode != 0:
        raise AssertionError(f'{result.args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}')
    return result


def losses(workdir):
    """{step: loss} from metrics.jsonl; the last line for a step wins (a resumed run repeats steps)."""
    records = {}
    for line in (Path(workdir) / 'metrics.jsonl').read_text().splitlines():
        record = json.loads(line)
        if 'loss' in record:
            records[record['step']] = record['loss']
    return records


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='session')
def smoke_run(tmp_path_factory):
    """The smoke config, 12 steps, one device, never interrupted: the reference the other runs must match."""
    workdir = tmp_path_factory.mktemp('smoke')
    result = train([SMOKE, f'--workdir={workdir}'])
    return workdir, result


@pytest.fixture(scope='session')
def mesh_runs(tmp_path_factory):
    """{'8x1', '4x2' (data x fsdp): {step: loss}} from one process with 8 virtual CPU devices."""
    out = tmp_path_factory.mktemp('meshes')
    train([str(out)], devices=8, script=[str(REPO / 'tests/train/mesh_runs.py')])
    return json.loads((out / 'losses.json').read_text())

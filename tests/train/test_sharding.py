"""Scale: the same losses on one device, on 8 (data parallel), on 4 x 2 (data x fsdp), and on 2 processes x 4."""

import numpy as np

from mae_flax.configs import mae
from mae_flax.train import pretrain
from tests.train.conftest import SMOKE, finish, free_port, losses, start

# the same math in a different order: XLA splits the batch mean and the gradient sums across devices, so float32
# rounding differs by an ulp or two (measured: at most 1.6e-7 relative over the 12 steps); 2e-6 leaves room for
# other CPUs and is still far below any real fault (a wrong shard of data or parameters moves the 2nd or 3rd digit)
RTOL = 2e-6


def trajectory(by_step):
    return np.array([by_step[step] for step in sorted(by_step, key=int)])


def test_data_parallel_over_8_devices_matches_one_device(smoke_run, mesh_runs):
    one_device = trajectory(losses(smoke_run[0]))
    assert len(one_device) == 12
    np.testing.assert_allclose(trajectory(mesh_runs['8x1']), one_device, rtol=RTOL)


def test_fsdp_4x2_matches_one_device(smoke_run, mesh_runs):
    # and fsdp really splits the parameters: every smoke parameter has an even dimension, so all of them
    assert mesh_runs['fsdp_sharded_fraction'] == 1.0
    np.testing.assert_allclose(trajectory(mesh_runs['4x2']), trajectory(losses(smoke_run[0])), rtol=RTOL)


def test_two_processes_of_4_devices_match_one_process_of_8(mesh_runs, tmp_path):
    address = f'127.0.0.1:{free_port()}'
    flags = [SMOKE, f'--workdir={tmp_path}', '--config.num_eval_images=0', f'--coordinator_address={address}']
    flags.append('--num_processes=2')
    processes = [start([*flags, f'--process_id={i}'], devices=4) for i in range(2)]
    results = [finish(process) for process in processes]
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    assert 'done: step 12' in results[0].stdout and 'done:' not in results[1].stdout  # only process 0 reports
    np.testing.assert_allclose(trajectory(losses(tmp_path)), trajectory(mesh_runs['8x1']), rtol=RTOL)


def test_gradient_accumulation_over_2_micro_batches_matches_one_batch(smoke_run, tmp_path):
    config = mae.get_config('smoke')
    config.grad_accum_steps = 2
    config.mesh.update(data=1, fsdp=1)
    pretrain.train(config, tmp_path)
    # the mean of two equal halves' means is the batch mean: only the order of the sums differs
    np.testing.assert_allclose(trajectory(losses(tmp_path)), trajectory(losses(smoke_run[0])), rtol=RTOL)

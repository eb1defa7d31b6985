"""Compiles the real mae-train step (steps.StepProgram) for a TPU slice this machine does not have, deviceless, with
the TPU compiler of libtpu, and reports what the compiler says: compile CPU time, HLO size, memory per chip,
collective bytes per step and the instructions that are slow on a TPU.

    /work/tpuenv/bin/python -m benchmarks.tpu_aot --topology v5e:2x2 --variant mae_vit_b16 --batch-per-chip 64
    /work/tpuenv/bin/python -m benchmarks.tpu_aot --topology v5e:2x2 --variant mae_vit_b16 --sweep depth
    /work/tpuenv/bin/python -m benchmarks.tpu_aot --topology v4:2x2x1 --variant mae_vit_l16 --sweep batch \
        --set remat=full
    python -m benchmarks.tpu_aot --topology cpu:8 --variant smoke                 # no libtpu: XLA's CPU compiler

libtpu stays out of the main environment (it slows every JAX process's start): it lives in a venv of its own,
`python -m venv --system-site-packages /work/tpuenv && /work/tpuenv/bin/pip install libtpu==0.0.42.1` (the version
jax[tpu] 0.10.2 pins). The step's host-side setup runs on the CPU backend; the TPU is only a compile target.

Each measurement is a list of config overrides (`--set key=value`, a Python literal or a string); an override of a
field the config does not have (yet) is skipped with a message and recorded under `skipped`, so a sweep written for
`scan_layers` or `remat` runs before those fields exist.
"""

import argparse
import ast
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path

import jax
import ml_collections
from jax.experimental import topologies
from jaxlib import xla_client

from benchmarks import hlo
from mae_core.errors import UsageError
from mae_flax.configs import mae as mae_configs
from mae_flax.files import atomic_path
from mae_flax.train import config_checks, sharding, steps

RESULTS_DIR = Path(__file__).parent / 'results'
GIB = 2**30
HBM_GIB = {'v5e': 16, 'v4': 32, 'v5p': 95, 'v6e': 32}  # per chip
DEPTHS = (3, 12, 6, 24, 32)  # the first two first: a sweep cut short still compares them
# libtpu looks for a TPU VM's metadata server and workers, and locks its chips against a second process;
# compiling for a topology needs none of these
TPU_ENV = dict(TPU_SKIP_MDS_QUERY='1', TPU_WORKER_HOSTNAMES='localhost', ALLOW_MULTIPLE_LIBTPU_LOAD='1')


def topology_devices(name):
    """'v5e:2x2' -> the compile-only devices of that TPU slice (needs libtpu); 'cpu:8' -> 8 devices of a CPU client
    made for the purpose (XLA's CPU compiler, no libtpu: for tests), whatever the default backend has."""
    kind, _, shape = name.partition(':')
    if kind == 'cpu':
        if not shape.isdigit() or int(shape) < 1:
            raise UsageError(f'--topology {name}: expected cpu:N with N devices, e.g. cpu:8')
        return xla_client.make_cpu_client(num_devices=int(shape)).devices()
    for key, value in TPU_ENV.items():
        os.environ.setdefault(key, value)
    # v4 and v5p chips are one device of two cores (megacore), as a TPU VM shows them
    options = dict(chip_config_name='megacore') if kind in ('v4', 'v5p') else {}
    try:
        return topologies.get_topology_desc(topology_name=name, platform='tpu', **options).devices
    except RuntimeError as error:
        if 'not installed' in str(error):
            raise UsageError(
                f'--topology {name} needs libtpu, which this Python lacks: run it with /work/tpuenv/bin/python '
                '(see the docstring), or compile for CPU devices with --topology cpu:8'
            ) from error
        raise UsageError(f'--topology {name}: {error}') from error


def parse_override(text):
    """'model.encoder.depth=12' -> ('model.encoder.depth', 12); a value that is no Python literal is a string."""
    key, sep, value = text.partition('=')
    if not sep or not key:
        raise argparse.ArgumentTypeError(f'--set expects key=value, got {text!r}')
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def has_field(config, dotted):
    *parents, last = dotted.split('.')
    for part in parents:
        if part not in config or not isinstance(config[part], ml_collections.ConfigDict):
            return False
        config = config[part]
    return last in config


def make_config(variant, batch_size, dtype, overrides):
    """(config, applied overrides, skipped overrides with the reason)."""
    config = mae_configs.get_config(variant)
    config.update(batch_size=batch_size, dtype=dtype, grad_accum_steps=1)
    config.data.source = 'default'  # no data is read; the ImageNet variants only require a source to be named
    applied, skipped = {}, {}
    for key, value in overrides:
        if not has_field(config, key):
            skipped[key] = f'config has no field {key} (yet): override {key}={value!r} skipped'
            print(skipped[key], flush=True)
            continue
        *parents, last = key.split('.')
        node = config
        for part in parents:
            node = node[part]
        node[last] = value
        applied[key] = value
    spec = config_checks.check(config)
    config = config_checks.filled(config, spec)  # as pretrain.train does
    return config, applied, skipped


# --- one measurement ----------------------------------------------------------------------------------------------


def minimum_collective_bytes(abstract_params, param_shardings, mesh, compute_dtype):
    """What a step must move at least: with data parallelism one all-reduce of the gradients; with fsdp the
    sharded parameters gathered twice (forward, backward) and their gradients reduce-scattered, the replicated
    ones all-reduced, and the fsdp shards of the gradients all-reduced over the data axis. In the compute dtype:
    the matmuls run on bf16 copies of the float32 weights, so what is gathered and the gradients that come back
    through the copies are bf16 (the issue's 'one bf16 all-reduce of the gradients')."""
    data, fsdp = mesh.shape['data'], mesh.shape['fsdp']
    leaves = zip(jax.tree.leaves(abstract_params), jax.tree.leaves(param_shardings), strict=True)
    sharded = replicated = 0
    itemsize = jax.numpy.dtype(compute_dtype).itemsize
    for leaf, leaf_sharding in leaves:
        size = math.prod(leaf.shape) * min(itemsize, leaf.dtype.itemsize)
        if fsdp > 1 and any(axis is not None for axis in leaf_sharding.spec):
            sharded += size
        else:
            replicated += size
    if data * fsdp == 1:
        return {kind: 0 for kind in hlo.COLLECTIVES}
    return {
        'all-reduce': replicated + (sharded // fsdp if data > 1 else 0),
        'all-gather': 2 * sharded,
        'reduce-scatter': sharded,
        'all-to-all': 0,
        'collective-permute': 0,
    }


def measure(devices, topology, variant, batch_per_chip, dtype, overrides, keep_hlo=None):
    """Compiles the step once and returns its row."""
    config, applied, skipped = make_config(variant, batch_per_chip * len(devices), dtype, overrides)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, devices=devices)
    row = dict(
        topology=topology,
        device_kind=devices[0].device_kind,
        chips=len(devices),
        mesh=dict(mesh.shape),
        variant=variant,
        batch_per_chip=batch_per_chip,
        dtype=dtype,
        overrides=applied,
        skipped=skipped,
    )
    program = steps.pretrain_program(config, mesh)
    state, batch = program.abstract_inputs(config, mesh)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    # XLA's CPU stand-in checks the program, not its machine code: LLVM unoptimised, half the compile time
    options = {'xla_backend_optimization_level': 0} if devices[0].platform == 'cpu' else None
    try:
        compiled = program.train_step.lower(state, batch).compile(options)
    except jax.errors.JaxRuntimeError as error:
        if 'RESOURCE_EXHAUSTED' not in str(error):
            raise
        # the TPU compiler refuses a program whose buffers exceed the chip's memory: the answer, not a failure
        return row | dict(compile_cpu_s=time.process_time() - cpu_start, fits=False, error=str(error).splitlines()[0])
    row.update(compile_cpu_s=time.process_time() - cpu_start, compile_wall_s=time.perf_counter() - wall_start)
    hlo_text = compiled.as_text()
    if keep_hlo:
        Path(keep_hlo).write_text(hlo_text)
    row.update(hlo.analyse_hlo(hlo_text))
    params = program.abstract_state['params']
    row['parameters'] = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
    row['minimum_collective_bytes'] = minimum_collective_bytes(params, program.shardings['params'], mesh, config.dtype)
    memory = compiled.memory_analysis()
    if memory is not None:
        sizes = {field: getattr(memory, f'{field}_size_in_bytes') for field in ('argument', 'output', 'temp', 'alias')}
        sizes['peak'] = sizes['argument'] + sizes['output'] + sizes['temp'] - sizes['alias']
        row['memory_per_chip'] = sizes
        hbm = HBM_GIB.get(topology.partition(':')[0])
        if hbm:
            row.update(hbm_gib=hbm, fits=sizes['peak'] <= hbm * GIB)
    return row


def largest_fitting_batch(run, first, limit=4096):
    """Doublings of `first` until one does not fit, then the midpoint of the last that fit and the first
    that did not: a coarse bisection, since every point is a compilation. Returns (largest, rows)."""
    rows, fit, batch = [], None, first
    while batch <= limit:
        rows.append(run(batch))
        if not rows[-1].get('fits'):
            break
        fit, batch = batch, batch * 2
    if fit is not None and batch <= limit and batch - fit > 1:
        rows.append(run((fit + batch) // 2))
        if rows[-1].get('fits'):
            fit = (fit + batch) // 2
    return fit, rows


def sweep_rows(sweep, run):
    """The rows of a named sweep; `run(batch_per_chip=None, extra=())` compiles one."""
    if sweep in ('depth', 'all'):
        for depth in DEPTHS:
            yield run(extra=[('model.encoder.depth', depth)])
    if sweep in ('batch', 'all'):
        largest, rows = largest_fitting_batch(lambda batch: run(batch_per_chip=batch), run.batch_per_chip)
        for row in rows:
            row['largest_fitting_batch_per_chip'] = largest
            yield row
    if sweep in ('collectives', 'all'):
        chips = run.chips
        for fsdp in sorted({1, chips}):
            yield run(extra=[('mesh.data', -1), ('mesh.fsdp', fsdp)])


def write_results(results, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(results, indent=2) + '\n')
    return path


def summary(row):
    head = f'{row["variant"]} {row["overrides"]} b/chip {row["batch_per_chip"]} {row["dtype"]} mesh {row["mesh"]}'
    if 'error' in row:
        return f'{head}: does not fit ({row["compile_cpu_s"]:.1f} CPU-s): {row["error"]}'
    memory = row.get('memory_per_chip', {})
    collectives = ', '.join(f'{k} {v["bytes"] / 2**20:.1f} MiB' for k, v in row['collectives'].items() if v['count'])
    return (
        f'{head}: compile {row["compile_cpu_s"]:.1f} CPU-s, {row["hlo_instructions"]} HLO instructions, '
        f'peak {memory.get("peak", 0) / GIB:.2f} GiB/chip{" (fits)" if row.get("fits") else ""}, '
        f'{row["counts"]}, collectives: {collectives or "none"}'
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        '--topology', default='v5e:2x2', help="a TPU slice ('v5e:2x2', 'v4:2x2x1', 'v5p:2x2x1') or cpu:N"
    )
    parser.add_argument('--variant', default='mae_vit_b16', choices=mae_configs.VARIANTS)
    parser.add_argument('--batch-per-chip', type=int, default=64, help='the first of --sweep batch')
    parser.add_argument('--dtype', default='bfloat16', choices=config_checks.DTYPES)
    parser.add_argument(
        '--set', dest='overrides', type=parse_override, action='append', default=[], metavar='KEY=VALUE'
    )
    parser.add_argument('--sweep', choices=('none', 'depth', 'batch', 'collectives', 'all'), default='none')
    parser.add_argument('--keep-hlo', type=Path, help='also write the optimized HLO of the (last) compile here')
    parser.add_argument('--out', type=Path, help='results file (default: benchmarks/results/tpu_aot-KIND.json)')
    args = parser.parse_args(argv)

    if jax.config.jax_platforms is None:
        jax.config.update('jax_platforms', 'cpu')  # the host-side setup; libtpu must not look for a TPU to run on
    devices = topology_devices(args.topology)

    def run(batch_per_chip=None, extra=()):
        row = measure(
            devices,
            args.topology,
            args.variant,
            batch_per_chip or args.batch_per_chip,
            args.dtype,
            [*args.overrides, *extra],
            keep_hlo=args.keep_hlo,
        )
        print(summary(row), flush=True)
        return row

    run.chips, run.batch_per_chip = len(devices), args.batch_per_chip
    results = dict(
        date=datetime.date.today().isoformat(),
        command=' '.join(['python -m benchmarks.tpu_aot', *(sys.argv[1:] if argv is None else argv)]),
        jax=jax.__version__,
        cpus=len(os.sched_getaffinity(0)),
        results=[],
    )
    path = args.out or RESULTS_DIR / f'tpu_aot-{args.topology.partition(":")[0]}.json'
    for row in [run()] if args.sweep == 'none' else sweep_rows(args.sweep, run):
        results['results'].append(row)
        write_results(results, path)  # after every compile: a long sweep cut short keeps what it measured
    print(f'wrote {path}')
    return results


if __name__ == '__main__':
    main()

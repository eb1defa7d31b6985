"""The package's layers, read from its import statements (function-level imports included): no module imports one
that imports it back, and no import runs back up a layer. From the bottom:

    mae_core                  the model description and contract, no framework
    mae_torch, mae_flax       the models, families, the converter engine (mae_flax.convert), mae_flax.files
    mae_flax.train (below)    workdir, model_state, state_checkpoints, sharding, optim, data, report, config_checks
    mae_flax.train (above)    steps, loop, pretrain, classify, main, classify_main
    mae_flax.model_files, mae_flax.cli   the commands: they read workdirs without the training loop
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ('mae_core', 'mae_torch', 'mae_flax')
LOOP = ('mae_flax.train.steps', 'mae_flax.train.loop', 'mae_flax.train.pretrain', 'mae_flax.train.classify')
COMMANDS = ('mae_flax.train.main', 'mae_flax.train.classify_main', 'mae_flax.cli', 'mae_flax.model_files')


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def modules():
    return {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob('*.py')}


def imports(path, known):
    """The project's modules that `path` imports (a `from package import name` counts as the submodule when
    `name` is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {
                f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in known else node.module for a in node.names
            }
    return {name for name in found if name in known}


def graph():
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def within(name, prefixes):
    return any(name == prefix or name.startswith(prefix + '.') for prefix in prefixes)


def test_no_module_imports_one_that_imports_it_back():
    edges = graph()
    state, cycles = {}, []

    def visit(name, trail):
        state[name] = 'open'
        for target in sorted(edges[name]):
            if state.get(target) == 'open':
                cycles.append(' -> '.join([*trail[trail.index(target) :], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = 'done'

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    # a package's __init__ re-exporting its own submodules is not a circle: Python runs it before any submodule
    cycles = [c for c in cycles if not all(part.startswith(c.split(' -> ')[-1]) for part in c.split(' -> '))]
    assert not cycles


@pytest.mark.parametrize(
    ('lower', 'forbidden'),
    [
        (('mae_core',), ('mae_flax', 'mae_torch')),
        (('mae_torch',), ('mae_flax',)),
        (
            ('mae_flax.files', 'mae_flax.convert', 'mae_flax.families', 'mae_flax.official', 'mae_flax.vit_pytorch'),
            ('mae_flax.train', 'mae_flax.cli', 'mae_flax.model_files'),
        ),
        (
            (
                'mae_flax.train.workdir',
                'mae_flax.train.model_state',
                'mae_flax.train.state_checkpoints',
                'mae_flax.train.data',
            ),
            (*LOOP, *COMMANDS),
        ),
        (('mae_flax.cli', 'mae_flax.model_files'), LOOP),
    ],
)
def test_no_import_runs_back_up_a_layer(lower, forbidden):
    wrong = [
        f'{name} imports {target}'
        for name, targets in graph().items()
        if within(name, lower)
        for target in targets
        if within(target, forbidden)
    ]
    assert not wrong


def test_every_module_says_what_it_is_for_and_stays_readable():
    for name, path in modules().items():
        source = path.read_text()
        if not source.strip():
            continue
        assert ast.get_docstring(ast.parse(source)), f'{name} has no docstring'
        assert len(source.splitlines()) <= 400, f'{name} has {len(source.splitlines())} lines'

"""The three console scripts: --help works, and the installed names point at the modules' run()."""

import importlib
import importlib.metadata

import pytest

SCRIPTS = {'mae-convert': 'convert', 'mae-parity': 'parity', 'mae-reconstruct': 'reconstruct'}


@pytest.mark.parametrize('script', SCRIPTS)
def test_help_exits_0_and_names_the_script(script, capsys):
    module = importlib.import_module(f'mae_flax.cli.{SCRIPTS[script]}')
    with pytest.raises(SystemExit) as exit_info:
        module.run(['--help'])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert out.startswith(f'usage: {script}') and 'exit codes' in out.lower() and '--heads' in out


@pytest.mark.parametrize('script', SCRIPTS)
def test_console_script_resolves_when_installed(script):
    entry_points = {entry.name: entry for entry in importlib.metadata.entry_points(group='console_scripts')}
    if script not in entry_points:
        pytest.skip('twin-mae is not installed (pip install -e .)')
    assert entry_points[script].load() is importlib.import_module(f'mae_flax.cli.{SCRIPTS[script]}').run


def test_mae_export_help_lists_its_flags_and_exits_0(capsys):
    from mae_flax.cli import export

    with pytest.raises(SystemExit) as exit_info:
        export.run(['--help'])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith('usage: mae-export')
    assert all(flag in out for flag in ('--workdir', '--out', '--step', '--encoder_only'))

"""A mistake in the config or the flags is one line naming the field, found before anything is created or
compiled; anything else is a bug and keeps its traceback."""

import sys

import fsspec.registry  # noqa: F401  (the module, read from sys.modules: fsspec.registry is its mapping)
import pytest
from absl import flags
from etils import epath

from mae_core.errors import UsageError
from mae_flax.configs import classify as classify_configs
from mae_flax.configs import mae
from mae_flax.train import classify, main, pretrain
from tests.train.conftest import REPO, SMOKE, train


@pytest.mark.parametrize(
    ('field', 'value', 'message'),
    [
        ('model.encoder.mlp_dim', -1, 'config.model.encoder.mlp_dim must be a positive integer, got -1'),
        ('model.mae.masking_ratio', 1.5, 'config.model.mae.masking_ratio must be a number strictly between 0 and 1'),
        ('model.encoder.image_size', 18, r'config.model: .*image_size \(18, 18\) must be divisible by patch_size'),
        ('total_steps', -3, 'config.total_steps must be a positive integer, got -3'),
        ('log_every', 0, 'config.log_every must be a positive integer, got 0'),
        ('checkpoint.every_steps', 0, 'config.checkpoint.every_steps must be a positive integer, got 0'),
        ('optim.b2', 1.0, r'config.optim.b2 must be a number in \[0, 1\), got 1.0'),
        ('data.crop_scale', (0.5, 0.2), r'config.data.crop_scale must be \(low, high\) with 0 < low <= high <= 1'),
        ('dtype', 'float64', "config.dtype must be one of 'float32', 'bfloat16', 'float16', got 'float64'"),
        ('batch_size', 10, 'config.batch_size 10 must be divisible by grad_accum_steps'),
    ],
)
def test_a_bad_field_is_named_and_nothing_is_created(tmp_path, field, value, message):
    config = mae.get_config('smoke')
    *parents, name = field.split('.')
    node = config
    for parent in parents:
        node = node[parent]
    node[name] = value
    config.grad_accum_steps = 4 if field == 'batch_size' else 1
    with pytest.raises(UsageError, match=message):
        pretrain.train(config, tmp_path / 'run')
    assert not (tmp_path / 'run').exists()


def test_a_gs_workdir_without_gcsfs_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'gcsfs', None)  # import gcsfs raises ImportError, as where it is not installed
    for protocol in ('gs', 'gcs'):  # and fsspec has not kept the class from an earlier test's import
        monkeypatch.delitem(sys.modules['fsspec.registry']._registry, protocol, raising=False)
    epath.backend.fsspec_backend._get_filesystem.cache_clear()  # nor etils.epath its filesystem (test_remote's)
    with pytest.raises(UsageError, match=r"gs://bucket/run: .*gcsfs.*pip install 'twin-mae\[gcs\]'"):
        pretrain.train(mae.get_config('smoke'), 'gs://bucket/run')


def test_mae_finetune_refuses_a_gs_workdir_in_one_line():
    # gs:// workdirs are mae-train's (tested against an emulator, tests/train/test_remote.py), not the classifiers'
    with pytest.raises(UsageError, match='gs://bucket/run: only mae-train writes to remote paths'):
        classify.train(classify_configs.get_config('smoke'), 'gs://bucket/run')


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / 'run').write_text('not a folder')
    with pytest.raises(UsageError, match='is a file, not a folder'):
        pretrain.train(mae.get_config('smoke'), tmp_path / 'run')


def test_the_command_says_one_line_and_takes_dashed_flags(tmp_path):
    # --init-from as people type it: absl alone would not know it
    result = train([SMOKE, f'--workdir={tmp_path / "run"}', '--init-from=missing.pt'], check=False)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == 'mae-train: error: --init_from missing.pt: no such file or folder'
    result = train([SMOKE, f'--workdir={tmp_path / "run"}', '--config.model.encoder.mlp_dim=-1'], check=False)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        'mae-train: error: config.model.encoder.mlp_dim must be a positive integer, got -1'
    )
    assert not (tmp_path / 'run').exists()


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError('an internal shape mismatch')

    monkeypatch.setattr(pretrain, 'train', broken)
    main.define_flags()
    flags.FLAGS(['mae-train', f'--workdir={tmp_path}'])
    try:
        with pytest.raises(ValueError, match='an internal shape mismatch'):  # not turned into SystemExit
            main.main(['mae-train'])
    finally:
        flags.FLAGS.unparse_flags()


def test_help_lists_the_command_s_flags_variants_and_overrides():
    result = train(['--help'], check=False)
    assert result.returncode == 0, result.stderr
    for expected in ('--workdir', '--init_from', '--config', 'mae_vit_b16', 'vitpytorch', '--config.batch_size=1024'):
        assert expected in result.stdout, expected


@pytest.mark.parametrize(
    ('flag', 'message'),
    [
        ('--config.nonexistent=1', "--config.nonexistent: the config has no field 'nonexistent'"),
        (
            '--config.model.encoder.embed_dimm=3',  # the default config's model is the official family's
            '--config.model.encoder.embed_dimm: the config has no field \'embed_dimm\'. Did you mean "embed_dim"',
        ),
        (f'--config={REPO}/mae_flax/configs/mae.py:nope', "unknown config variant 'nope': expected one of tiny"),
    ],
)
def test_a_bad_config_override_is_one_line(tmp_path, flag, message):
    result = train([f'--workdir={tmp_path / "run"}', flag], check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr
    assert lines[0].startswith('mae-train: error: ') and message in lines[0]
    assert not (tmp_path / 'run').exists()

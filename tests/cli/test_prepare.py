"""mae-prepare: a folder of images -> ArrayRecord shards in the folder's sorted order, or one line saying why not."""

import types

import grain
import numpy as np
import pytest
from PIL import Image

from mae_flax.cli import prepare
from tests.cli.conftest import assert_one_line_error


def _images(folder, count=5):
    """`count` tiny PNG and JPEG files, some in a sub-folder; their paths in sorted order."""
    (folder / 'sub').mkdir(parents=True)
    paths = []
    for index in range(count):
        path = folder / ('sub' if index % 2 else '') / f'{index}.{"png" if index % 2 else "jpg"}'
        Image.fromarray(np.full((12, 16, 3), 40 * index, np.uint8)).save(path)
        paths.append(path)
    return sorted(paths)


def _run(capsys, *argv):
    """Runs mae-prepare in this process (no interpreter start-up); its exit code and output."""
    with pytest.raises(SystemExit) as exit_info:
        prepare.run([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return types.SimpleNamespace(returncode=exit_info.value.code, stdout=captured.out, stderr=captured.err)


def test_packs_every_image_as_it_is_into_shards_in_sorted_order(tmp_path, capsys):
    paths = _images(tmp_path / 'images')
    (tmp_path / 'images' / 'notes.jpg').write_bytes(b'not an image')
    result = _run(capsys, tmp_path / 'images', tmp_path / 'shards', '--shards', 2)
    assert result.returncode == 0 and 'wrote 5 images into 2 shards' in result.stdout
    assert 'left out' in result.stderr and 'notes.jpg' in result.stderr
    shards = sorted((tmp_path / 'shards').iterdir())
    assert [shard.name for shard in shards] == [
        'images-00000-of-00002.array_record',
        'images-00001-of-00002.array_record',
    ]
    records = grain.sources.ArrayRecordDataSource([str(shard) for shard in shards])
    assert [records[i] for i in range(len(records))] == [path.read_bytes() for path in paths]


def test_help_names_the_command_and_its_exit_codes(capsys):
    result = _run(capsys, '--help')
    assert result.returncode == 0 and result.stdout.startswith('usage: mae-prepare') and 'Exit codes' in result.stdout


@pytest.mark.parametrize(
    ('setup', 'message'),
    [
        (lambda tmp: (tmp / 'images').mkdir(), 'no images in'),
        (lambda tmp: None, 'no such folder of images'),
        (lambda tmp: (_images(tmp / 'images'), (tmp / 'shards').write_text('a file')), 'is not a folder'),
        (
            lambda tmp: (
                _images(tmp / 'images'),
                (tmp / 'shards').mkdir(),
                (tmp / 'shards' / 'x.array_record').touch(),
            ),
            'already holds .array_record files',
        ),
    ],
    ids=['empty folder', 'missing folder', 'output is a file', 'output holds shards'],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, setup, message):
    setup(tmp_path)
    result = _run(capsys, tmp_path / 'images', tmp_path / 'shards')
    assert_one_line_error(result, 'mae-prepare')
    assert message in result.stderr


def test_more_shards_than_images_is_refused(tmp_path, capsys):
    _images(tmp_path / 'images', count=2)
    result = _run(capsys, tmp_path / 'images', tmp_path / 'shards', '--shards', 3)
    assert_one_line_error(result, 'mae-prepare')
    assert '--shards must be between 1 and the 2 images' in result.stderr and 'got 3' in result.stderr


def test_an_unwritable_output_is_one_line(tmp_path, capsys):
    _images(tmp_path / 'images', count=2)
    (tmp_path / 'file').write_text('a file, not a folder')
    result = _run(capsys, tmp_path / 'images', tmp_path / 'file' / 'shards')
    assert_one_line_error(result, 'mae-prepare')
    assert 'cannot write to' in result.stderr

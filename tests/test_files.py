"""Atomic writes: the file appears whole or not at all, with the mode any other new file would get."""

import os
import stat

import pytest

from mae_flax.files import atomic_path


def test_the_file_appears_with_the_umask_mode_and_no_temporary_is_left(tmp_path):
    with atomic_path(tmp_path / 'sub' / 'out.txt') as tmp:
        tmp.write_text('done')
        assert not (tmp_path / 'sub' / 'out.txt').exists()  # nothing visible until the block finishes
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / 'sub' / 'out.txt').read_text() == 'done'
    assert stat.S_IMODE((tmp_path / 'sub' / 'out.txt').stat().st_mode) == 0o666 & ~umask
    assert os.listdir(tmp_path / 'sub') == ['out.txt']


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'out.txt'
    path.write_text('old')
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text('half')
        raise RuntimeError('crash mid-write')
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['out.txt']

"""Paths and atomic file writes: a reader never sees a half-written file, a crash never leaves one behind. Paths may be local or
remote (`gs://...` and any other URL etils.epath knows): `as_path` gives the right kind."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

# mkstemp creates files readable by their owner alone; the finished file gets the usual umask-based mode
UMASK = os.umask(0)
os.umask(UMASK)


def is_remote(path):
    return '://' in str(path)


def as_path(path):
    """A local path (absolute) or, for a URL such as gs://bucket/run, an etils.epath.Path (Path would turn it into
    ./gs:/bucket/run, silently). Remote paths need the filesystem's package: gcsfs for gs://."""
    if is_remote(path):
        from etils import epath

        return epath.Path(str(path))
    return Path(path).absolute()


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary local path; renames it onto `path` only if the block finishes. For a remote `path` the
    file is uploaded when the block finishes: an object store replaces an object whole, never half-written."""
    if is_remote(path):
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder) / as_path(path).name
            yield tmp
            with open(tmp, 'rb') as source, as_path(path).open('wb') as target:
                shutil.copyfileobj(source, target)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)

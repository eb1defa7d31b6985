"""JAX's persistent compilation cache for a run: a restarted (preempted) job loads its compiled step from disk
instead of compiling it again, which takes minutes for a large model on a pod.

`config.compilation_cache`: 'workdir' (the default) keeps it in WORKDIR/compilation_cache, a path anywhere else
(shared by several runs), '' turns it off. A cache JAX was already given (JAX_COMPILATION_CACHE_DIR, or
jax.config) is left as it is. The log says whether the step came from the cache.
"""

import collections
import contextlib
import logging
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

from mae_flax.files import as_path, is_remote

EVENTS = collections.Counter()  # JAX's cache events since the process started (hits, misses)
_listening = False


def _count(event, **_):
    if event.startswith('/jax/compilation_cache/'):
        EVENTS[event.rsplit('/', 1)[-1]] += 1


def directory(setting, workdir):
    """The cache folder a `config.compilation_cache` setting names, or None."""
    if not setting:
        return None
    if setting == 'workdir':
        return workdir / 'compilation_cache'
    return as_path(setting if is_remote(setting) else Path(setting).expanduser())


@contextlib.contextmanager
def enabled(setting, workdir):
    """Within the block, compiled programs are read from and written to the run's cache; yields its folder (None
    when off). JAX's previous setting is restored after, so a caller's own process is left as it was."""
    global _listening
    if not _listening:
        jax.monitoring.register_event_listener(_count)
        _listening = True
    given = jax.config.jax_compilation_cache_dir
    path = directory(setting, workdir)
    if given or path is None:
        yield as_path(given) if given else None
        return
    jax.config.update('jax_compilation_cache_dir', str(path))
    compilation_cache.reset_cache()  # JAX decides once per process whether to use the cache: decide again
    try:
        yield path
    finally:
        jax.config.update('jax_compilation_cache_dir', given)
        compilation_cache.reset_cache()


def log_first_step(path, hits_before, seconds):
    """One log line after the first step: loaded from the cache, or compiled (and cached for a restart)."""
    if path is None:
        logging.info('compiled the step in %.1f s (no persistent compilation cache)', seconds)
    elif EVENTS['cache_hits'] > hits_before:
        logging.info('loaded the compiled step from the persistent compilation cache %s in %.1f s', path, seconds)
    else:
        logging.info('compiled the step in %.1f s; cached in %s for a restart', seconds, path)

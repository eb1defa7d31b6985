"""The commands keep orbax's echoes of a failed checkpoint off the terminal, and nothing else."""

import logging

from mae_flax.quiet import OrbaxEchoes


def _error_raised_in(filename):
    def fail():
        raise ValueError('OUT_OF_RANGE: Error reading')

    try:
        exec(compile('fail()', filename, 'exec'), {'fail': fail})  # noqa: S102  (a frame that claims the file)
    except ValueError as error:
        return error


def _record(pathname, message, error):
    exc_info = (type(error), error, error.__traceback__) if error else None
    return logging.LogRecord('asyncio', logging.ERROR, pathname, 1, message, None, exc_info)


def test_orbax_s_echoes_are_dropped_and_other_errors_kept():
    drop = OrbaxEchoes().filter
    orbax_error = _error_raised_in('/site-packages/orbax/checkpoint/_src/serialization/serialization.py')
    # asyncio's report of a future orbax abandoned: the traceback passes through orbax
    assert not drop(_record('/asyncio/base_events.py', 'Future exception was never retrieved', orbax_error))
    assert not drop(_record('/site-packages/orbax/checkpoint/_src/futures/future.py', 'thread raised', None))
    # anything else, and orbax's warnings, stay
    assert drop(_record('/asyncio/base_events.py', 'Future exception was never retrieved', _error_raised_in('/app.py')))
    warning = _record('/site-packages/orbax/x.py', 'slow save', None)
    warning.levelno = logging.WARNING
    assert drop(warning)

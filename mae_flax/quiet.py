"""What the commands keep off the terminal: orbax's and tensorstore's echoes of a failed checkpoint read or write,
which the commands report themselves, once, in one line."""

import logging
import sys
import warnings


class OrbaxEchoes(logging.Filter):
    """Drops orbax's tracebacks of a failed background write (hundreds of lines per failure): the loop reports the
    failure itself, in one line (CheckpointError)."""

    def filter(self, record):
        if record.levelno < logging.ERROR:
            return True
        error = record.exc_info[1] if record.exc_info else None
        # orbax's own log lines, and asyncio's "exception was never retrieved" for the futures orbax abandoned
        return not ('orbax' in f'{record.pathname} {record.getMessage()}' or _raised_in_orbax(error))

    installed = False

    @classmethod
    def install(cls):
        """Once per process, for the commands (a library import changes no hook)."""
        if cls.installed:
            return
        cls.installed = True
        for name in ('absl', 'asyncio'):  # orbax logs through absl; asyncio reports the tasks it abandoned
            logging.getLogger(name).addFilter(cls())
        # after a failed write or read, orbax abandons its coroutines and tensorstore completes its futures on the
        # event loop orbax has closed: each is reported as unraisable (thousands of lines for one damaged file).
        # The failure itself is reported, once; nothing is lost by dropping these echoes
        # and the coroutines it abandoned are reported at exit as never awaited (no coroutine of ours is)
        warnings.filterwarnings('ignore', message="coroutine '.*' was never awaited", category=RuntimeWarning)
        previous = sys.unraisablehook

        def unraisablehook(unraisable):
            error, code = unraisable.exc_value, getattr(unraisable.object, 'cr_code', None)
            closed_loop = isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'
            from_orbax = (code is not None and 'orbax' in code.co_filename) or _raised_in_orbax(error)
            if not (closed_loop or from_orbax):
                previous(unraisable)

        sys.unraisablehook = unraisablehook


def _raised_in_orbax(error):
    """Whether `error`, or an error it was raised from, passed through orbax (a coroutine, future or task of it)."""
    while error is not None:
        traceback = error.__traceback__
        while traceback is not None:
            if 'orbax' in traceback.tb_frame.f_code.co_filename:
                return True
            traceback = traceback.tb_next
        error = error.__cause__ or error.__context__
    return False

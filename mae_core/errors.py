"""The one exception type for a user's mistake."""


class UsageError(ValueError):
    """A mistake in what the user passed (a flag, a config field, a file): the commands report it as one line and
    exit 2, never with a traceback. A ValueError, so library callers that catch ValueError still do. Anything
    else that escapes a command is a bug and keeps its traceback."""

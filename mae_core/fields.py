"""Checks for the fields of a model description: each takes (name, value) and returns the value, or raises a
UsageError that names the field, what came and what is allowed."""

import math

from mae_core.errors import UsageError


def pair(t):
    """32 -> (32, 32); (32, 48) stays (height, width)."""
    return tuple(t) if isinstance(t, tuple | list) else (t, t)


def compact(size):
    """(32, 32) -> 32; (32, 48) stays: how the constructors and the JSON spell a size."""
    height, width = pair(size)
    return height if height == width else (height, width)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(name, value):
    if not _is_int(value) or value < 1:
        raise UsageError(f'{name} must be a positive integer, got {value!r}')
    return value


def non_negative_int(name, value):
    if not _is_int(value) or value < 0:
        raise UsageError(f'{name} must be an integer >= 0, got {value!r}')
    return value


def positive_float(name, value):
    if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value) or value <= 0:
        raise UsageError(f'{name} must be a positive number, got {value!r}')
    return float(value)


def ratio(name, value):
    if not (_is_int(value) or isinstance(value, float)) or not 0 < value < 1:
        raise UsageError(f'{name} must be a number strictly between 0 and 1, got {value!r}')
    return float(value)


def boolean(name, value):
    if not isinstance(value, bool):
        raise UsageError(f'{name} must be true or false, got {value!r}')
    return value


def size(name, value):
    """A positive int, or (height, width) of positive ints; returned compact."""
    parts = pair(value)
    if len(parts) != 2 or not all(_is_int(part) and part > 0 for part in parts):
        raise UsageError(f'{name} must be a positive integer or (height, width), got {value!r}')
    return compact(parts)


def choice(*allowed):
    def check(name, value):
        if value not in allowed:
            raise UsageError(f'{name} must be one of {", ".join(map(repr, allowed))}, got {value!r}')
        return value

    return check

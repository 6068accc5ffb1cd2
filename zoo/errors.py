"""The zoo's user-facing error, and the one place where the runtime's errors become it."""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

from runtime.errors import CamError, GapcamError

F = TypeVar("F", bound=Callable)


class ZooError(GapcamError):
    """A failure the user can fix: bad package, bad index, failed download or verification."""


def zoo_errors(fn: F) -> F:
    """Let a zoo function raise ZooError only: the runtime's CamError (a package or model it read
    failed its checks) is re-raised as ZooError with the same message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CamError as err:
            raise ZooError(str(err)) from None

    return wrapper  # type: ignore[return-value]

"""User-facing errors shared by every gapcam package, and the CLI edge that prints them."""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import click

F = TypeVar("F", bound=Callable)


class GapcamError(Exception):
    """A failure the user can fix (bad file, bad argument); printed as one line, never a traceback."""


class CamError(GapcamError):
    """A user-facing failure in the runtime: loading a model, reading an image, bad arguments."""


def cli_errors(fn: F) -> F:
    """Turn GapcamError into click's one-line `Error: ...` with exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GapcamError as err:
            raise click.ClickException(str(err)) from None

    return wrapper  # type: ignore[return-value]

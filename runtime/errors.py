"""User-facing errors shared by every gapcam package, and the checks every file format repeats."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class GapcamError(Exception):
    """A failure the user can fix (bad file, bad argument); printed as one line, never a traceback."""


class CamError(GapcamError):
    """A user-facing failure in the runtime: loading a model, reading an image, bad arguments."""


def first_line(err: BaseException, prefer: tuple[str, ...] = (), limit: int = 200) -> str:
    """One line of an exception's message for a one-line error, at most `limit` characters: the first
    line that contains one of `prefer`, else the first non-empty line, else the exception's type name.

    Libraries (torch, onnxruntime, onnx) raise messages of many lines, and the telling one is not
    always the first (torch puts "size mismatch for fc.weight: ..." under a header line).
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    preferred = [line for line in lines if any(marker in line for marker in prefer)]
    return ((preferred or lines)[0] if lines else err.__class__.__name__)[:limit]


def check_format(data: Any, name: str, version: int, source: str, what: str, error: type[GapcamError] = CamError) -> None:
    """Every gapcam file carries {"format": name, "format_version": version}; refuse anything else.

    Raises `error` (the caller's package's type) naming `source` and `what` the file should be.
    """
    if not isinstance(data, dict) or data.get("format") != name:
        raise error(f"{source}: not a {what} (no {name!r} format field)")
    if data.get("format_version") != version:
        raise error(
            f"{source}: {what} format version {data.get('format_version')!r} is not supported (this gapcam reads version {version})"
        )


def raises_only(error: type[GapcamError]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a package's public function so that it raises only that package's `error`: another
    package's GapcamError from inside (a CamError from a package the zoo read, a TrainError from a
    checkpoint being exported) is re-raised as `error` with the same one-line message."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except error:
                raise
            except GapcamError as err:
                raise error(str(err)) from None

        return wrapper

    return decorate

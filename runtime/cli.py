"""The command-line edge shared by every gapcam package: one-line errors, and groups whose first
argument may be a subcommand's positional argument instead (`python -m train RECIPE`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from runtime.errors import GapcamError

P = ParamSpec("P")
R = TypeVar("R")


def cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn GapcamError into click's one-line `Error: ...` with exit code 1; so too an OSError that
    reaches the edge (an output folder that cannot be written, a full disk), naming its file."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except GapcamError as err:
            raise click.ClickException(str(err)) from None
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            raise click.ClickException(f"{where}{err.strerror or err}") from None

    return wrapper


class DefaultGroup(click.Group):
    """A group where `prog ARG ...` means `prog DEFAULT ARG ...` when ARG names no subcommand."""

    default_command = ""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

"""User-facing errors shared by every gapcam package."""
from __future__ import annotations


class GapcamError(Exception):
    """A failure the user can fix (bad file, bad argument); printed as one line, never a traceback."""


class CamError(GapcamError):
    """A user-facing failure in the runtime: loading a model, reading an image, bad arguments."""

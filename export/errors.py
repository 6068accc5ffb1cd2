"""The export package's user-facing error."""

from runtime.errors import GapcamError


class ExportError(GapcamError):
    """A failure the user can fix: unreadable checkpoint, unsupported model, failed parity."""

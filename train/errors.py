"""The training package's user-facing error."""

from runtime.errors import GapcamError


class TrainError(GapcamError):
    """A failure the user can fix: bad data path, bad recipe argument, unreadable checkpoint."""

"""The zoo's user-facing error."""

from runtime.errors import GapcamError


class ZooError(GapcamError):
    """A failure the user can fix: bad package, bad index, failed download or verification."""

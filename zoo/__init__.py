"""gapcam model zoo: pack, verify, publish, list and fetch versioned, checksummed CAM model packages.

No torch here: the zoo needs the standard library, numpy and the runtime only.
"""

from zoo.errors import ZooError
from zoo.fetch import fetch
from zoo.index import publish, read_index
from zoo.pack import pack
from zoo.triton import triton_repository
from zoo.verify import verify

__all__ = ["ZooError", "fetch", "pack", "publish", "read_index", "triton_repository", "verify"]

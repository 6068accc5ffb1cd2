"""torch and torchvision made unimportable, as on a machine without them.

`make test-fast` puts this folder on PYTHONPATH, so pytest and every Python process a test starts
import this module at startup. An import of torch then fails as if it were not installed, and is
recorded: tests/tiers.py fails the run and names the test, even one that caught the ImportError.
"""

import os
import sys

BLOCKED = ("torch", "torchvision")
attempts: list[tuple[str, str]] = []  # (module, the test that asked: PYTEST_CURRENT_TEST, unset while collecting)


class NoTorch:
    """A meta path finder ahead of all others: it refuses BLOCKED and lets every other module through."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            attempts.append((name, os.environ.get("PYTEST_CURRENT_TEST", "collection")))
            raise ModuleNotFoundError(f"No module named {name!r} (the fast test tier runs without torch)", name=name)
        return None


sys.meta_path.insert(0, NoTorch())

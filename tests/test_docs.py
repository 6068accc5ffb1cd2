"""The documentation's map of the code stays true: every file and module it names exists."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ["docs/index.md", "CONTRIBUTING.md", "README.md"]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_named_files_exist(document):
    text = (ROOT / document).read_text()
    named = set(re.findall(r"`((?:runtime|train|export|zoo|gapcam|tests|benchmarks|scripts|docs)/[\w./-]+\.(?:py|md))`", text))
    named |= {f"docs/{link}" for link in re.findall(r"\]\(([\w-]+\.md)\)", text)} if document.startswith("docs/") else set()
    assert named, f"{document} names no files"
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"{document} names files that do not exist: {missing}"


def resolves(dotted: str) -> bool:
    """Whether `a.b.c` is a module, or an attribute reached from the longest module prefix."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:n]))
        except ImportError:
            continue
        for name in parts[n:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_index_names_code_that_exists():
    text = (ROOT / "docs/index.md").read_text()
    names = set(re.findall(r"`((?:runtime|zoo)\.[A-Za-z_][\w.]*)`", text))  # no torch here: train and export are named by file
    assert names
    missing = sorted(name for name in names if not resolves(name))
    assert not missing, f"docs/index.md names what does not exist: {missing}"

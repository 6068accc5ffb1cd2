"""The documentation's map of the code stays true: every file and module it names exists."""

import importlib
import re
import warnings
from pathlib import Path

import numpy as np
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
    """Whether `a.b.c` is a module, or an attribute reached from the longest module prefix; a
    deprecated alias does not count (the warning is an error here)."""
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
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        missing = sorted(name for name in names if not resolves(name))
    assert not missing, f"docs/index.md names what does not exist: {missing}"


def test_the_contributing_guides_method_example_runs(session, monkeypatch):
    """The example of registering a method, run as written, gives a method CamSession.run takes."""
    from runtime.maps import methods

    monkeypatch.setattr(methods, "METHODS", dict(methods.METHODS))  # the example's method stays in this test
    example = re.search(r"## Add an explanation method.*?```python\n(.*?)```", (ROOT / "CONTRIBUTING.md").read_text(), re.S).group(1)
    exec(compile(example, "CONTRIBUTING.md", "exec"), {})
    image = np.zeros((64, 64, 3), np.uint8)
    ours, cam = session.run(image, method="relucam")[0], session.run(image, method="cam")[0]
    np.testing.assert_allclose(ours.cams_raw, np.maximum(cam.cams_raw, 0), rtol=1e-6)

"""Shared fixtures: the committed tiny shapes model (tests/data/tiny.onnx, no torch needed), and one trained for an
epoch and exported, for the whole session, for the tests that compare torch with ONNX. The test tiers' hooks are in tiers.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiers import pytest_collection_modifyitems, pytest_ignore_collect, pytest_sessionfinish, pytest_terminal_summary  # noqa: F401

_ROOT = Path(__file__).resolve().parent.parent
FIXTURE_MODEL = _ROOT / "tests" / "data" / "tiny.onnx"  # `make test-fixture` rebuilds it (scripts/build_test_fixture.py)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from train.loop import TrainConfig, fit

    out = tmp_path_factory.mktemp("tiny") / "shapes.pt"
    fit(TrainConfig(recipe="shapes", out=str(out), samples=160, epochs=1, cam_channels=32), log=lambda line: None)
    return out


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """The committed model, copied so that no test can change it. Not tiny_checkpoint's export: a test
    that compares with the torch model, or tests the exporter, uses exported_onnx."""
    if not FIXTURE_MODEL.is_file():
        pytest.fail(f"{FIXTURE_MODEL} is missing: `make test-fixture` builds it")
    path = tmp_path_factory.mktemp("committed") / FIXTURE_MODEL.name
    shutil.copyfile(FIXTURE_MODEL, path)
    return path


@pytest.fixture(scope="session")
def exported_onnx(tiny_checkpoint):
    """tiny_checkpoint exported in this session (slow: it trains)."""
    from export.onnx_export import export_checkpoint

    return export_checkpoint(tiny_checkpoint).path


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from train.checkpoint import load_trained

    return load_trained(tiny_checkpoint)[0]


@pytest.fixture(scope="session")
def session(tiny_onnx):
    from runtime import CamSession

    return CamSession(tiny_onnx, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def exported_session(exported_onnx):
    """A session of tiny_model's own export, for comparisons with the torch model."""
    from runtime import CamSession

    return CamSession(exported_onnx, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def shape_images():
    """Eight held-out shapes images (uint8 64x64x3) with their labels and ground-truth boxes."""
    from runtime.evaluation.shapes import render_split

    return render_split(8, seed=7, split="test")


@pytest.fixture()
def private_store(tmp_path, monkeypatch):
    """A local store (GAPCAM_HOME) of this test's own."""
    monkeypatch.setenv("GAPCAM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="session")
def packed(tmp_path_factory, tiny_onnx, shape_images):
    """The tiny model packed as tiny@0.1.0 with two sample images."""
    from PIL import Image

    from zoo import pack

    out = tmp_path_factory.mktemp("packed")
    images = []
    for i, pixels in enumerate(shape_images.images[:2]):
        Image.fromarray(pixels).save(out / f"in{i}.png")
        images.append(out / f"in{i}.png")
    return pack(tiny_onnx, "tiny", "0.1.0", out / "dist", license="MIT", images=images, metrics={"note_accuracy": 0.5})


@pytest.fixture(scope="session")
def valid_props(tiny_onnx):
    """The tiny model's gapcam metadata, as onnxruntime's custom_metadata_map gives it."""
    import onnx

    return {p.key: p.value for p in onnx.load(tiny_onnx).metadata_props}


@pytest.fixture(scope="session")
def distributions(tmp_path_factory):
    """The sdist and the wheel, built from a copy of the tracked files (the checkout stays clean)."""
    source = tmp_path_factory.mktemp("source")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if (_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(_ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    built = []
    for hook in ("build_sdist", "build_wheel"):  # one process each, as a build frontend does
        code = f"from setuptools import build_meta; print(build_meta.{hook}({str(dist)!r}))"
        done = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        built.append(dist / done.stdout.split()[-1])
    return tuple(built)

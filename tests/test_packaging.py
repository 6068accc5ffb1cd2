"""The distribution: one onnxruntime build, never two; a wheel that installs and runs without torch;
an sdist whose tests run; the license and metadata in both."""

import os
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

from fixtures import fresh_virtualenv

ROOT = Path(__file__).resolve().parent.parent


def installed(name):
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def test_onnxruntime_and_onnxruntime_gpu_are_not_both_installed():
    assert installed("onnxruntime") + installed("onnxruntime-gpu") == 1


def fake_distribution(folder: Path, name: str, version: str = "1.20.0") -> Path:
    """A dist-info that makes importlib.metadata see `name` installed."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


def run_python(code: str, path: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{path}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, *args] if args else [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )


def test_two_onnxruntime_builds_are_named_with_the_fix(tmp_path):
    present = "onnxruntime-gpu" if installed("onnxruntime-gpu") else "onnxruntime"
    other = "onnxruntime" if present == "onnxruntime-gpu" else "onnxruntime-gpu"
    fake_distribution(tmp_path, other)
    done = run_python("import runtime", tmp_path)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "are installed over each other in one onnxruntime folder; keep one" in last
    assert f"{other} 1.20.0" in last and present in last and "pip uninstall -y" in last and "gapcam[cpu]" in last
    cli = run_python("", tmp_path, "-m", "gapcam", "run", "shapes", "x.png")
    assert cli.returncode == 1 and "Traceback" not in cli.stderr and "keep one" in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1


def test_a_missing_onnxruntime_says_what_to_install(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['onnxruntime'] = None\n")
    done = run_python("", tmp_path, "-m", "gapcam", "run", "shapes", "x.png")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "onnxruntime is not installed or does not load" in done.stderr and "pip install 'gapcam[cpu]'" in done.stderr


def test_wheel_carries_license_metadata_and_types(distributions):
    _, wheel = distributions
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = Parser().parsestr(archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {f"{p}/py.typed" for p in ("gapcam", "runtime", "train", "export", "zoo")} <= set(names)
    assert any(n.startswith("runtime/models/shapes-") and n.endswith(".zip") for n in names) and "runtime/models/index.json" in names
    assert not any(n.startswith("tests/") for n in names)
    assert meta["License-Expression"] == "MIT" and meta["Author"] == "The gapcam authors"
    assert meta.get_all("Project-URL") and meta["Keywords"] and "Typing :: Typed" in meta.get_all("Classifier")
    requires = meta.get_all("Requires-Dist")
    assert not any(r.startswith("onnxruntime") and "extra ==" not in r for r in requires)  # no build chosen for the user
    assert any(r.startswith("onnxruntime>=") and 'extra == "cpu"' in r for r in requires)
    assert any(r.startswith("onnxruntime-gpu") and 'extra == "gpu"' in r for r in requires)
    assert any(r.startswith("nvidia-pytriton") and 'extra == "serve"' in r for r in requires)
    opencv = [r for r in requires if r.startswith("opencv-python-headless") and "<5" in r]  # 5.0 has no Haar cascades
    assert all(any(f'extra == "{extra}"' in r for r in opencv) for extra in ("faces", "video"))


def test_sdist_holds_what_its_tests_need_and_they_run(distributions, tmp_path):
    sdist, _ = distributions
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    root = next(tmp_path.iterdir())
    for name in (
        "LICENSE",
        "tests/conftest.py",
        "tests/fixtures.py",
        "tests/test_boxes.py",
        "scripts/fer_minixception.py",
        "Makefile",
        "pyproject.toml",
        "tests/tiers.py",
        "tests/data/tiny.onnx",
        "tests/no_torch/sitecustomize.py",
        "scripts/build_test_fixture.py",
    ):
        assert (root / name).is_file(), name
    env = {**os.environ, "PYTHONPATH": str(root)}
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert collected.returncode == 0, collected.stdout[-2000:]
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_boxes.py"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert ran.returncode == 0 and " passed" in ran.stdout, ran.stdout[-2000:]


def test_wheel_in_a_fresh_virtualenv_runs_without_torch(distributions, tmp_path, shape_images):
    """`pip install 'gapcam[cpu]'` into an empty virtualenv: the runtime only, CPU onnxruntime, no torch."""
    from PIL import Image

    _, wheel = distributions
    python = fresh_virtualenv(tmp_path / "fresh", sys.executable, f"{wheel}[cpu]")
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    assert "onnxruntime==" in listed and "onnxruntime-gpu" not in listed and "torch" not in listed
    Image.fromarray(shape_images.images[0]).save(tmp_path / "image.png")
    gapcam = tmp_path / "fresh" / "bin" / "gapcam"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    ran = subprocess.run(
        [str(gapcam), "run", "shapes", "image.png", "--out", "out"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "out" / "results.json").is_file() and "image.png" in ran.stdout
    train = subprocess.run([str(gapcam), "train", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert (
        train.returncode == 1
        and train.stderr.strip() == "Error: gapcam train needs torch, which is not installed: pip install 'gapcam[train]'"
    )
    version = subprocess.run([str(gapcam), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert version.returncode == 0 and "onnxruntime: onnxruntime " in version.stdout and "torch: not installed" in version.stdout
    help_text = subprocess.run([str(gapcam), "run", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env).stdout
    assert help_text.startswith("Usage: gapcam run ")


def test_version_reports_a_broken_onnxruntime_instead_of_failing(tmp_path):
    other = "onnxruntime" if installed("onnxruntime-gpu") else "onnxruntime-gpu"
    fake_distribution(tmp_path, other)
    done = run_python("", tmp_path, "-m", "gapcam", "--version")
    assert done.returncode == 0 and "onnxruntime: " in done.stdout and "keep one" in done.stdout and "torch: " in done.stdout

"""The compatibility tier (`make test-compat`, marker `compat`): gapcam installed from its wheel into
fresh virtualenvs, with the oldest supported onnxruntime and with every Python the classifiers name,
giving the same answers as the build under test. pip fetches what it needs from the package index."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures import fresh_virtualenv
from runtime.inference import compat

pytestmark = pytest.mark.compat

OLDEST = "1.15.1"  # the oldest release of runtime.inference.compat.OLDEST_ONNXRUNTIME, tested
PYTHONS = ("3.10", "3.11", "3.12", "3.13")  # as pyproject.toml's classifiers name them
# One program, run by the build under test and by each fresh virtualenv: every model's answers on
# the images, as arrays. Written to a file so that no source tree is on the other Python's path.
ANSWERS = """
import json, sys
import numpy as np
import onnxruntime
from runtime import CamSession
models, images, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
arrays = {"onnxruntime": np.array(onnxruntime.__version__)}
for name, model in models.items():
    results = CamSession(model, providers=["CPUExecutionProvider"]).run(images, topk=2)
    arrays[name + ".probs"] = np.stack([r.probs for r in results])
    arrays[name + ".cams"] = np.stack([r.cams_raw for r in results])
    arrays[name + ".boxes"] = np.stack([r.boxes for r in results])
np.savez(out, **arrays)
"""


def clean_env() -> dict:
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def answers(python: str | Path, models: dict, images: list, folder: Path, name: str) -> dict:
    script = folder / "answers.py"
    script.write_text(ANSWERS)
    out = folder / f"{name}.npz"
    done = subprocess.run(
        [str(python), str(script), json.dumps({k: str(v) for k, v in models.items()}), json.dumps([str(i) for i in images]), str(out)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


def assert_same_answers(got: dict, expected: dict, names) -> None:
    for name in names:
        np.testing.assert_allclose(got[f"{name}.probs"], expected[f"{name}.probs"], rtol=1e-4, atol=1e-6, err_msg=name)
        cams, reference = got[f"{name}.cams"], expected[f"{name}.cams"]
        np.testing.assert_allclose(cams, reference, rtol=0, atol=1e-4 * np.abs(reference).max(), err_msg=name)
        np.testing.assert_array_equal(got[f"{name}.boxes"], expected[f"{name}.boxes"], err_msg=name)


@pytest.fixture(scope="module")
def images(tmp_path_factory, shape_images):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, pixels in enumerate(shape_images.images):
        Image.fromarray(pixels).save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    return paths


@pytest.fixture(scope="module")
def models(tmp_path_factory, exported_onnx, shape_images):
    """The bundled model, and a fresh export of the tiny model at the default opset, fp32 and INT8."""
    from export.int8 import NO_GATE, NO_SPEED_GATE, CalibrationData, Int8Options, quantize_model
    from runtime.evaluation.shapes import render_split

    folder = tmp_path_factory.mktemp("compat-models")
    held_out = list(render_split(24, seed=3, split="test").images)
    data = CalibrationData(list(shape_images.images), held_out, source="test")
    int8 = quantize_model(exported_onnx, Int8Options(data, gate=NO_GATE, speed_gate=NO_SPEED_GATE, out=folder / "tiny.int8.onnx"))
    return {"bundled": "shapes", "fp32": exported_onnx, "int8": int8.path}


def test_the_oldest_supported_onnxruntime_gives_the_current_builds_answers(distributions, tmp_path, models, images):
    _, wheel = distributions
    python = fresh_virtualenv(tmp_path / "oldest", sys.executable, str(wheel), f"onnxruntime=={OLDEST}", "numpy<2")
    assert OLDEST.startswith(compat.OLDEST_ONNXRUNTIME + ".")
    old = answers(python, models, images, tmp_path, "oldest")
    assert str(old["onnxruntime"]) == OLDEST
    assert_same_answers(old, answers(sys.executable, models, images, tmp_path, "current"), models)


def interpreter(version: str) -> str | None:
    """A working Python of this minor version: a pyenv build, else one on PATH (a pyenv shim on PATH
    may name a version that is not selected, so each candidate must run)."""
    import shutil

    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [str(p) for p in sorted(pyenv.glob(f"{version}.*/bin/python{version}"), reverse=True)] if pyenv.is_dir() else []
    candidates += [found for found in [shutil.which(f"python{version}")] if found]
    for candidate in candidates:
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


@pytest.mark.parametrize("version", PYTHONS)
def test_each_named_python_installs_gapcam_cpu_and_runs_the_bundled_model(distributions, tmp_path, images, version):
    python = interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine (neither python{version} on PATH nor a pyenv build)")
    _, wheel = distributions
    venv_python = fresh_virtualenv(tmp_path / "venv", python, f"{wheel}[cpu]")
    gapcam = venv_python.parent / "gapcam"
    ran = subprocess.run(
        [str(gapcam), "run", "shapes", str(images[0]), "--out", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "results.json").read_text())
    assert_same_answers(
        answers(venv_python, {"bundled": "shapes"}, images, tmp_path, "there"),
        answers(sys.executable, {"bundled": "shapes"}, images, tmp_path, "here"),
        ["bundled"],
    )

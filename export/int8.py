"""INT8 edge models: onnxruntime's static quantization (QDQ), kept only when the explanations survive it.

A quantized model is only worth shipping if it still says what the fp32 model says, and looks where
it looks. So every INT8 export is measured against its fp32 model on held-out images that
calibration never saw (`measure_fidelity`), and refused, with nothing written, when a figure misses
its bound (`FidelityGate`) or INT8 is not faster here (`SpeedGate`). Where only the fidelity gate
fails, the layers quantization hurts most are kept in float one at a time while the speed gate
passes (`quantize_model`). The settings were chosen by measurement: see docs/int8.md.

The INT8 file is a gapcam model like any other: same input, outputs (float32) and metadata, plus
`gapcam.quantization` with the settings and the measured figures.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

from export.errors import ExportError
from export.graph_prep import prepare_for_quantization
from export.versions import default_opset, stamp_lowest_versions
from runtime.deprecation import moved_names
from runtime.errors import CamError, first_line
from runtime.formats.files import atomic_path, sha256_file
from runtime.formats.onnx_model import PREFIX, ModelInfo
from runtime.inference.compat import required_onnxruntime
from runtime.inference.providers import CPU, onnxruntime_version
from runtime.inference.session import CamSession
from runtime.inputs.image import ImageInput, Preprocess, collect_images, load_image, preprocess
from runtime.maps.boxes import box_iou
from runtime.maps.cam import class_activation_maps

CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
CALIBRATION_IMAGES = 100  # default number of images the activation ranges come from
HELD_OUT_IMAGES = 500  # default number of held-out images the gate measures on
MIN_HELD_OUT = 20  # fewer held-out images than this measure nothing a user could rely on
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # the layers (nodes with weights) the search may keep in float
SENSITIVITY_IMAGES = 32  # calibration images each layer's sensitivity is measured on
# onnxruntime 1.32's quantize_static keeps its ranges in a file: the search quantizes one graph many
# times, and calibration is most of what each quantization costs. Older builds calibrate every time.
CALIBRATION_CACHE = "calibration_cache_path" in inspect.signature(quantize_static).parameters


@dataclass(frozen=True)
class QuantizationSettings:
    """How the model is quantized: onnxruntime QDQ, int8 weights, uint8 activations, and these choices."""

    method: str = "percentile"  # activation ranges: "minmax", "entropy" or "percentile" (99.999th)
    per_channel: bool = True  # one weight scale per output channel (else one per tensor)
    float_tail: int = 0  # keep the last N conv layers in float (the CAM conv is the last)
    reduce_range: bool = False  # 7-bit weights: for x86 CPUs without VNNI, whose 8-bit dot products can saturate
    max_float_layers: int = 3  # when the fidelity gate fails: keep up to N more layers in float, most sensitive first (0: never)

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ExportError(f"calibration method must be one of {sorted(CALIBRATION_METHODS)}, got {self.method!r}")
        if self.float_tail < 0:
            raise ExportError(f"float_tail must be 0 or more, got {self.float_tail}")
        if self.max_float_layers < 0:
            raise ExportError(f"max_float_layers must be 0 or more, got {self.max_float_layers}")


@dataclass(frozen=True)
class FidelityGate:
    """The least an INT8 model must keep of its fp32 model on held-out images."""

    min_top1_agreement: float = 0.98  # share of images whose top class is the fp32 model's
    min_median_box_iou: float = 0.9  # median IoU of the top class's box with the fp32 model's
    min_median_cam_correlation: float = 0.95  # median Pearson correlation of the top class's raw CAM
    # multi-label models only: what each image's decisions and each class's probability keep
    min_positive_set_agreement: float = 0.95  # share of images whose positive classes are exactly the fp32 model's
    max_prob_difference_p95: float = 0.05  # 95th percentile of |p_int8 - p_fp32| over every image and class

    def failures(self, fidelity: dict) -> list[str]:
        """One phrase per figure past its bound, naming the figure and the option that sets it."""
        checks = [
            ("top-1 agreement", fidelity["top1_agreement"], self.min_top1_agreement, "--min-top1-agreement"),
            ("median box IoU", fidelity["box_iou"]["median"], self.min_median_box_iou, "--min-box-iou"),
            ("median CAM correlation", fidelity["cam_correlation"]["median"], self.min_median_cam_correlation, "--min-cam-correlation"),
        ]
        if "positive_set_agreement" in fidelity:
            checks.append(
                ("positive-set agreement", fidelity["positive_set_agreement"], self.min_positive_set_agreement, "--min-positive-agreement")
            )
        failed = [f"{name} {value:.3f} < {bound:g} ({option})" for name, value, bound, option in checks if not value >= bound]
        if "prob_difference" in fidelity and not fidelity["prob_difference"]["p95"] <= self.max_prob_difference_p95:
            gap = fidelity["prob_difference"]["p95"]
            failed.append(f"95th-percentile probability difference {gap:.3f} > {self.max_prob_difference_p95:g} (--max-prob-difference)")
        return failed


@dataclass(frozen=True)
class SpeedGate:
    """How much faster than its fp32 model an INT8 model must run, here, to be written.

    Measured at export on the exporting machine (`measure_speed`): the figure holds for that CPU and
    its onnxruntime build, not for another. INT8 gains nothing where onnxruntime has no fast integer
    kernels for a network's layers (depthwise-separable convolutions on many CPUs), and then a
    slower and less faithful model must not replace the fp32 one.
    """

    min_speedup: float = 1.0  # fp32 time / INT8 time at batch 32 (and batch 1 where it is the worse)
    batches: tuple[int, ...] = (1, 32)
    repeats: int = 5  # interleaved runs of each model per batch size; the medians are compared

    def failure(self, speed: dict) -> str | None:
        """The phrase that refuses the model, or None: the worst speed-up over the batch sizes measured."""
        batch, figures = min(speed["batches"].items(), key=lambda item: item[1]["speedup"])
        if figures["speedup"] >= self.min_speedup:
            return None
        ratio = figures["speedup"]
        how = f"{1 / ratio:.2f}x slower than" if ratio < 1 else f"only {ratio:.2f}x as fast as"
        return f"INT8 is {how} fp32 on this CPU at batch {batch} (--min-speedup {self.min_speedup:g})"


NO_SPEED_GATE = SpeedGate(min_speedup=0.0)  # measure, never refuse: tests, studies, benchmarks
NO_GATE = FidelityGate(
    min_top1_agreement=0.0,
    min_median_box_iou=0.0,
    min_median_cam_correlation=-1.0,
    min_positive_set_agreement=0.0,
    max_prob_difference_p95=1.0,
)  # report, never refuse: studies, benchmarks


@dataclass
class CalibrationData:
    """Images for calibration and, separately, for the fidelity gate (never the same images)."""

    calibration: Sequence[ImageInput]
    held_out: Sequence[ImageInput]
    source: str  # where they come from, for the user and the metadata
    held_out_labels: np.ndarray | None = None  # [N] true classes, where the data has them
    held_out_boxes: list[np.ndarray] | None = None  # per image [m, 4] true boxes in its pixels, where the data has them

    def __post_init__(self) -> None:
        if not self.calibration:
            raise ExportError(f"{self.source}: no calibration images")
        if len(self.held_out) < MIN_HELD_OUT:
            raise ExportError(
                f"{self.source}: {len(self.held_out)} held-out images for the fidelity gate; it needs at least {MIN_HELD_OUT}"
            )


@dataclass
class Int8Options:
    """What `export_model` needs to write an INT8 model beside the fp32 one."""

    data: CalibrationData
    settings: QuantizationSettings = field(default_factory=QuantizationSettings)
    gate: FidelityGate = field(default_factory=FidelityGate)
    speed_gate: SpeedGate = field(default_factory=SpeedGate)
    out: str | os.PathLike | None = None  # default: beside the fp32 model, NAME.int8.onnx


class Int8Refused(ExportError):
    """The INT8 model missed a gate and nothing was written; `quantization` holds what its metadata would
    have said: settings, the last model's figures, and the search's steps (`float_search`) where it ran."""

    def __init__(self, message: str, quantization: dict[str, Any]):
        super().__init__(message)
        self.quantization = quantization


@dataclass
class Int8Report:
    path: Path
    size_bytes: int
    fp32_size_bytes: int
    quantization: dict  # what goes into the metadata: settings, calibration, fidelity, gates, the search's steps where it ran


def sampled_calibration(
    calibration_pool: Sequence[ImageInput] | np.ndarray,
    held_out_pool: Sequence[ImageInput] | np.ndarray,
    source: str,
    calibration_images: int = CALIBRATION_IMAGES,
    held_out_images: int = HELD_OUT_IMAGES,
    seed: int = 0,
    held_out_labels: Sequence[int] | np.ndarray | None = None,
    held_out_boxes: Sequence[np.ndarray | None] | None = None,
) -> CalibrationData:
    """`calibration_images` of `calibration_pool` and up to `held_out_images` of `held_out_pool`
    (a training and a validation split, given by the caller: image sources, or a uint8 array
    [N, H, W(, C)] of them), drawn with `seed` and kept in their
    order, with the held-out images' labels and true boxes where the caller has them (boxes only
    when every drawn image has some)."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(calibration_pool))[:calibration_images])
    held = np.sort(rng.permutation(len(held_out_pool))[:held_out_images])
    return CalibrationData(
        calibration=[calibration_pool[i] for i in chosen],
        held_out=[held_out_pool[i] for i in held],
        source=source,
        held_out_labels=None if held_out_labels is None else np.asarray(held_out_labels)[held],
        held_out_boxes=None
        if held_out_boxes is None or any(held_out_boxes[i] is None for i in held)
        else [np.asarray(held_out_boxes[i], dtype=np.float64).reshape(-1, 4) for i in held],
    )


def folder_calibration(
    folder: str | os.PathLike, calibration_images: int = CALIBRATION_IMAGES, held_out_images: int = HELD_OUT_IMAGES, seed: int = 0
) -> CalibrationData:
    """The images under `folder` (any layout), shuffled with `seed`: the first `calibration_images`
    calibrate, up to `held_out_images` of the rest are held out for the gate."""
    if not Path(folder).is_dir():
        raise ExportError(f"--calibration {folder}: not a folder")
    paths = collect_images([str(folder)])[0]
    needed = calibration_images + MIN_HELD_OUT
    if len(paths) < needed:
        raise ExportError(
            f"--calibration {folder}: {len(paths)} images; {calibration_images} calibrate and at least {MIN_HELD_OUT} "
            f"more are held out for the fidelity gate, so it needs {needed} (or fewer --calibration-images)"
        )
    order = np.random.default_rng(seed).permutation(len(paths))
    return CalibrationData(
        calibration=[paths[i] for i in order[:calibration_images]],
        held_out=[paths[i] for i in order[calibration_images : calibration_images + held_out_images]],
        source=f"folder {folder}",
    )


def int8_path(fp32_path: str | os.PathLike) -> Path:
    """fer.onnx -> fer.int8.onnx, beside it."""
    fp32_path = Path(fp32_path)
    return fp32_path.with_name(f"{fp32_path.stem}.int8.onnx")


class _OneImageAtATime(CalibrationDataReader):
    """Feeds calibration one preprocessed image per call (onnxruntime's histogram calibrators stack
    what they collect and fail on a shorter last batch), over the range calibration asks for."""

    def __init__(self, images: Sequence[ImageInput], spec: Preprocess):
        self._images, self._spec = images, spec
        self._next, self._end = 0, len(images)

    def __len__(self) -> int:
        return len(self._images)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, end_index

    def get_next(self) -> dict | None:
        if self._next >= self._end:
            return None
        image = self._images[self._next]
        self._next += 1
        try:
            return {"input": preprocess(image, self._spec)}
        except CamError as err:
            raise ExportError(f"calibration image: {err}") from None


def calibration_stride(count: int, most: int = 16) -> int:
    """Images per calibration pass: the largest divisor of `count` up to `most` (onnxruntime needs
    a divisor). Each pass folds its activations into the running ranges or histograms, so memory
    holds one pass's activations, not every image's."""
    return max(d for d in range(1, most + 1) if count % d == 0)


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantization tools print, and log warnings about the graph on the root logger: not
    the user's concern while the gates measure the result. The logging level is restored after."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


class _Quantizer:
    """One fp32 model prepared for quantization once and calibrated once, then quantized as often as
    the search for float layers asks, with any set of layers kept in float.

    Preparation: export.graph_prep's exact rewrites (-inf padding folded into max pooling; non-finite
    constants refused with ExportError), then onnxruntime's pre-processing (shape inference and graph
    optimization). Calibration: `calibration` in passes of `calibration_stride` images (onnxruntime's
    own CalibMaxIntermediateOutputs is not used: in 1.31 its MinMax calibrator drops every full
    chunk); onnxruntime 1.32 and newer keep the ranges in a file, so later quantizations skip it.
    Errors of onnxruntime's tools become one ExportError naming `target`.
    """

    def __init__(
        self, fp32_path: Path, work: Path, calibration: Sequence[ImageInput], spec: Preprocess, settings: QuantizationSettings, target: Path
    ):
        self.work, self.calibration, self.spec, self.settings, self.target = work, calibration, spec, settings, target
        graph = onnx.load(fp32_path)
        try:
            self.changes = prepare_for_quantization(graph)  # one line per exact rewrite, for the metadata
        except ExportError as err:
            raise ExportError(f"{fp32_path}: {err}") from None
        onnx.save_model(graph, work / "graph.onnx", save_as_external_data=False)
        self.prepared = work / "prepared.onnx"
        with self._onnxruntime_errors():
            quant_pre_process(str(work / "graph.onnx"), str(self.prepared))
        nodes = onnx.load(self.prepared).graph.node
        self.layers = [node.name for node in nodes if node.op_type in LAYER_OPS]  # what the search may keep in float
        self.convs = [node.name for node in nodes if node.op_type == "Conv"]
        self._cache = {"calibration_cache_path": str(work / "calibration.json")} if CALIBRATION_CACHE else {}

    @contextlib.contextmanager
    def _onnxruntime_errors(self):
        try:
            with _quiet():
                yield
        except ExportError:
            raise
        except Exception as err:  # onnxruntime's quantization tools raise many unrelated types
            raise ExportError(f"{self.target}: onnxruntime could not quantize the model ({first_line(err)}); nothing written") from None

    def last_convs(self, count: int) -> list[str]:
        return self.convs[len(self.convs) - count :] if count else []

    def quantize(self, float_layers: Sequence[str] = (), only: str | None = None) -> onnx.ModelProto:
        """The QDQ model (no gapcam metadata yet) with every layer quantized but `float_layers`, or
        with the layer `only` quantized and every other in float. A float layer reads its inputs in float
        (`_read_float_inputs`)."""
        out = self.work / "quantized.onnx"
        with self._onnxruntime_errors():
            quantize_static(
                str(self.prepared),
                str(out),
                _OneImageAtATime(self.calibration, self.spec),
                quant_format=QuantFormat.QDQ,
                per_channel=self.settings.per_channel,
                reduce_range=self.settings.reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CALIBRATION_METHODS[self.settings.method],
                nodes_to_exclude=list(float_layers),
                nodes_to_quantize=[only] if only else None,
                extra_options={
                    "CalibStridedMinMax": calibration_stride(len(self.calibration)),  # despite its name, used by every method
                    "QDQKeepRemovableActivations": True,  # a ReLU stays a node, so a float layer after it reads its true output
                },
                **self._cache,
            )
        model = onnx.load(out)
        _read_float_inputs(model, float_layers)
        return model

    def sensitivity(self, reference: CamSession, layers: Sequence[str]) -> list[tuple[str, float]]:
        """Each of `layers` with its error when it alone is quantized, most sensitive first.

        The error is measured on the model's outputs, on the first SENSITIVITY_IMAGES calibration
        images: the squared error of the logits relative to their spread, plus that of the fp32 model's
        top class's raw CAM (each image centred first: softmax and CAM correlation ignore an offset).
        """
        batch = reference.to_batch(list(self.calibration[:SENSITIVITY_IMAGES]))
        logits, features = reference.infer(batch)
        top = logits.argmax(axis=1)[:, None]
        weight = reference.info.fc_weight
        cams = class_activation_maps(features, weight, top)
        path, errors = self.work / "one-layer.onnx", []
        for layer in layers:
            _write_metadata(self.quantize(only=layer), reference.info, {"precision": "int8"}, path)
            one_logits, one_features = CamSession(path, providers=[CPU]).infer(batch)
            error = _relative_error(logits, one_logits) + _relative_error(cams, class_activation_maps(one_features, weight, top))
            errors.append((layer, error))
        return sorted(errors, key=lambda item: -item[1])


def _relative_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """sum |candidate - reference|^2 / sum |reference|^2, each image's values centred first."""

    def centred(values: np.ndarray) -> np.ndarray:
        flat = values.reshape(len(values), -1).astype(np.float64)
        return flat - flat.mean(axis=1, keepdims=True)

    return float((centred(candidate - reference) ** 2).sum() / max((centred(reference) ** 2).sum(), np.finfo(np.float64).tiny))


def _read_float_inputs(model: onnx.ModelProto, float_layers: Sequence[str]) -> None:
    """Let each layer of `float_layers` read its activations before their QuantizeLinear/DequantizeLinear
    pair, and remove the pairs no layer reads any more.

    Without this a float layer between quantized ones is not float where it runs: onnxruntime's
    WeightBiasQuantization optimizer (measured on 1.32) quantizes the float weights of a Conv or Gemm
    whose input comes from a DequantizeLinear and whose output goes to a QuantizeLinear, per tensor,
    when it loads the model. Reading float inputs also spares a float layer the int8 steps of the
    tensors it reads. Where it reads a quantized layer's output directly and nothing else reads that
    output's int8 form, that layer then writes float too (no QuantizeLinear is left after it).
    """
    graph, chosen = model.graph, set(float_layers)
    producers = {output: node for node in graph.node for output in node.output}
    for node in graph.node:
        if node.name not in chosen:
            continue
        for i, name in enumerate(node.input):
            dequantize = producers.get(name)
            quantize = producers.get(dequantize.input[0]) if dequantize is not None and dequantize.op_type == "DequantizeLinear" else None
            if quantize is not None and quantize.op_type == "QuantizeLinear":
                node.input[i] = quantize.input[0]
    outputs = {value.name for value in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        unread = [node for node in graph.node if not read.intersection(node.output)]
        if not unread:
            break
        for node in unread:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def quantize_file(
    fp32_path: Path, out: Path, calibration: Sequence[ImageInput], spec: Preprocess, settings: QuantizationSettings
) -> tuple[list[str], list[str]]:
    """Write the QDQ model of `fp32_path` to `out` (no metadata yet), with the last `settings.float_tail`
    convs in float; returns those convs and one line per exact rewrite of the graph (`export.graph_prep`).
    How the graph is prepared and calibrated: `_Quantizer`."""
    with tempfile.TemporaryDirectory(prefix="gapcam-int8-") as work:
        quantizer = _Quantizer(fp32_path, Path(work), calibration, spec, settings, out)
        kept_float = quantizer.last_convs(settings.float_tail)
        onnx.save_model(quantizer.quantize(kept_float), out, save_as_external_data=False)
    return kept_float, quantizer.changes


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps; two constant maps correlate 1 when equal, else 0."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    scale = np.sqrt((a * a).sum() * (b * b).sum())
    if scale == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float((a * b).sum() / scale)


def _spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(np.min(values)), "p05": float(np.percentile(values, 5))}


def measure_fidelity(
    reference: CamSession,
    candidate: CamSession,
    images: Sequence[ImageInput],
    labels: np.ndarray | None = None,
    boxes: list[np.ndarray] | None = None,
    batch_size: int = 32,
) -> dict:
    """How closely `candidate` (the INT8 model) follows `reference` (fp32) on `images`.

    For the reference's first explained class of each image: top-1 agreement, the largest
    probability difference (any class), the correlation of the raw CAMs and the IoU of the boxes
    (median, 5th percentile, worst). For a multi-label model also the share of images with the same
    positive classes, and the spread of every class's probability difference. With true `labels`
    [N] and `boxes`: classification and GT-known localization accuracy (box of the true class's CAM
    at the model's threshold, IoU >= 0.5) of both.
    """
    agree, prob_gap, correlations, ious = [], 0.0, [], []
    same_positives: list[bool] = []
    gaps: list[np.ndarray] = []
    correct: dict[str, list[bool]] = {"fp32": [], "int8": []}
    located: dict[str, list[bool]] = {"fp32": [], "int8": []}
    # measured against only where both are given, for one class per image
    truth = None if labels is None or boxes is None or np.ndim(labels) != 1 else (labels, boxes)
    for start in range(0, len(images), batch_size):
        batch = [load_image(image) for image in images[start : start + batch_size]]  # decoded once for every run below
        ref = reference.run(batch)
        top = np.array([[r.classes[0]] for r in ref])
        chosen = top if truth is None else np.concatenate([top, truth[0][start : start + len(batch), None]], axis=1)
        cand = candidate.run(batch, classes=chosen)
        for r, c in zip(ref, cand, strict=True):
            agree.append(int(np.argmax(c.logits)) == int(np.argmax(r.logits)))
            gaps.append(np.abs(r.probs - c.probs))
            prob_gap = max(prob_gap, float(gaps[-1].max()))
            same_positives.append(set(r.positives.tolist()) == set(c.positives.tolist()))
            correlations.append(_correlation(r.cams_raw[0], c.cams_raw[0]))
            ious.append(box_iou(r.box, c.box))
        if truth is not None:
            true_labels = truth[0][start : start + len(batch)]
            ref_true = reference.run(batch, classes=true_labels[:, None])
            for i, (r, c) in enumerate(zip(ref_true, cand, strict=True)):
                true_boxes = truth[1][start + i]
                correct["fp32"].append(int(np.argmax(r.logits)) == true_labels[i])
                correct["int8"].append(int(np.argmax(c.logits)) == true_labels[i])
                located["fp32"].append(box_iou(r.box, true_boxes) >= 0.5)
                located["int8"].append(box_iou(tuple(c.boxes[1]), true_boxes) >= 0.5)
    fidelity = {
        "images": len(images),
        "top1_agreement": float(np.mean(agree)),
        "max_prob_difference": prob_gap,
        "cam_correlation": _spread(correlations),
        "box_iou": _spread(ious),
    }
    if reference.info.multilabel:
        every_gap = np.concatenate(gaps)
        fidelity["positive_set_agreement"] = float(np.mean(same_positives))
        fidelity["prob_difference"] = {key: float(np.percentile(every_gap, q)) for key, q in (("median", 50), ("p95", 95), ("max", 100))}
    if truth is not None:
        fidelity["classification_accuracy"] = {k: float(np.mean(v)) for k, v in correct.items()}
        fidelity["gt_known_localization_accuracy"] = {k: float(np.mean(v)) for k, v in located.items()}
    return fidelity


def measure_speed(reference: CamSession, candidate: CamSession, gate: SpeedGate) -> dict[str, Any]:
    """Median inference time of the fp32 and INT8 models at each batch size, interleaved run by run
    (so both see the same machine state), on random inputs of the model's size; and the machine."""
    rng = np.random.default_rng(0)
    batches: dict[str, dict[str, float]] = {}
    for batch in gate.batches:
        x = rng.standard_normal((batch, reference.preprocessing.channels, *reference.input_size)).astype(np.float32)
        times: dict[str, list[float]] = {"fp32": [], "int8": []}
        for session in (reference, candidate):  # warm-up: the first call allocates
            session.infer(x)
        for _ in range(gate.repeats):
            for key, session in (("fp32", reference), ("int8", candidate)):
                start = time.perf_counter()
                session.infer(x)
                times[key].append(time.perf_counter() - start)
        fp32, int8 = (float(np.median(times[key])) * 1e3 for key in ("fp32", "int8"))
        batches[str(batch)] = {"fp32_ms": fp32, "int8_ms": int8, "speedup": fp32 / int8}
    return {"batches": batches, "machine": machine_description(), "repeats": gate.repeats}


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what `platform` knows."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_description() -> str:
    """The CPU the speed was measured on, its core count and the onnxruntime build."""
    return f"{cpu_name()}, {os.cpu_count()} cores, onnxruntime {onnxruntime_version()} on the CPU"


@dataclass
class _Trial:
    """One INT8 model (in the work folder, with metadata) and what the gates measured of it."""

    float_layers: list[str]
    proto: onnx.ModelProto
    fidelity: dict
    speed: dict

    def step(self, layer: str | None) -> dict:
        """The figures of one step of the search for float layers; `layer` is the one this step added."""
        return {
            "float_layer": layer,  # None: the model before the search
            "top1_agreement": self.fidelity["top1_agreement"],
            "cam_correlation_median": self.fidelity["cam_correlation"]["median"],
            "box_iou_median": self.fidelity["box_iou"]["median"],
            "speedup": {batch: figures["speedup"] for batch, figures in self.speed["batches"].items()},
            **({"positive_set_agreement": self.fidelity["positive_set_agreement"]} if "positive_set_agreement" in self.fidelity else {}),
        }


def _step_summary(step: dict) -> str:
    """A step of the search for float layers in words, as the refusal prints it."""
    speedups = step["speedup"]
    positives = f"positive-set agreement {step['positive_set_agreement']:.3f}, " if "positive_set_agreement" in step else ""
    return (
        f"{positives}top-1 agreement {step['top1_agreement']:.3f}, median CAM correlation {step['cam_correlation_median']:.4f}, "
        f"median box IoU {step['box_iou_median']:.3f}, speed-up {' / '.join(f'{s:.2f}x' for s in speedups.values())} at batch "
        f"{' / '.join(speedups)}"
    )


def _search_summary(steps: list[dict], budget: int) -> str:
    """The search for float layers in one phrase: each step's layer and figures."""
    described = (
        f"step {i}, {'+' + step['float_layer'] if step['float_layer'] else 'before the search'}: {_step_summary(step)}"
        for i, step in enumerate(steps)
    )
    return (
        f", with {len(steps) - 1} layer(s) kept in float, added one at a time, most sensitive first (--max-float-layers {budget}): "
        f"{'; '.join(described)}"
    )


def quantize_model(fp32_path: str | os.PathLike, options: Int8Options, name: str | os.PathLike | None = None) -> Int8Report:
    """Quantize the gapcam model at `fp32_path`, measure it against the fp32 model, and write it to
    `options.out` (default NAME.int8.onnx beside `name` or `fp32_path`) only if it passes both gates.

    Where only the fidelity gate fails, layers are kept in float one at a time, the most sensitive
    first (`_Quantizer.sensitivity`, measured once), each step measured by both gates again, until the
    fidelity gate passes, the speed gate fails, or `max_float_layers` steps are made. The steps'
    figures go into the metadata (`float_search`) or the refusal.

    Raises Int8Refused naming each failing figure, or ExportError saying what could not be read or
    quantized; nothing is written then.
    """
    fp32_path = Path(fp32_path)
    out = Path(options.out) if options.out is not None else int8_path(name or fp32_path)
    reference = CamSession(fp32_path, providers=[CPU])
    data, settings, gate, speed_gate = options.data, options.settings, options.gate, options.speed_gate
    with tempfile.TemporaryDirectory(prefix="gapcam-int8-") as work:
        quantizer = _Quantizer(fp32_path, Path(work), data.calibration, reference.preprocessing, settings, out)
        quantization: dict[str, Any] = {
            "precision": "int8",
            "format": "QDQ",
            "weights": f"int8 {'per channel' if settings.per_channel else 'per tensor'}{', 7-bit range' if settings.reduce_range else ''}",
            "activations": "uint8 per tensor",
            "calibration": {"method": settings.method, "images": len(data.calibration), "source": data.source},
            "graph_preparation": quantizer.changes,  # exact rewrites before calibration (export.graph_prep)
            "fp32_sha256": sha256_file(fp32_path),
            "onnxruntime": onnxruntime_version(),
        }
        candidate_path = Path(work) / "model.int8.onnx"

        def measured(float_layers: list[str]) -> _Trial:
            proto = quantizer.quantize(float_layers)
            _write_metadata(proto, reference.info, {**quantization, "float_nodes": float_layers}, candidate_path)
            candidate = CamSession(candidate_path, providers=[CPU])
            fidelity = measure_fidelity(reference, candidate, data.held_out, data.held_out_labels, data.held_out_boxes)
            return _Trial(float_layers, proto, {**fidelity, "source": data.source}, measure_speed(reference, candidate, speed_gate))

        trial = measured(quantizer.last_convs(settings.float_tail))
        steps = [trial.step(None)]
        if gate.failures(trial.fidelity) and not speed_gate.failure(trial.speed) and settings.max_float_layers:
            sensitivity = quantizer.sensitivity(reference, [layer for layer in quantizer.layers if layer not in trial.float_layers])
            for layer, _ in sensitivity[: settings.max_float_layers]:
                trial = measured([*trial.float_layers, layer])
                steps.append(trial.step(layer))
                if not gate.failures(trial.fidelity) or speed_gate.failure(trial.speed):
                    break
            quantization["float_search"] = {
                "max_float_layers": settings.max_float_layers,
                "sensitivity": [{"layer": layer, "error": error} for layer, error in sensitivity],  # most sensitive first
                "steps": steps,
            }
        quantization.update(
            float_nodes=trial.float_layers, fidelity=trial.fidelity, gate=asdict(gate), speed=trial.speed, speed_gate=asdict(speed_gate)
        )
        failed, slow = gate.failures(trial.fidelity), speed_gate.failure(trial.speed)
        images = trial.fidelity["images"]
        reasons = [f"the INT8 model fails its fidelity gate on {images} held-out images: {'; '.join(failed)}"] if failed else []
        reasons += [slow] if slow else []
        if reasons:  # both gates' figures and the search's steps, so that a user sees all that stands in the way at once
            searched = _search_summary(steps, settings.max_float_layers) if len(steps) > 1 else ""
            raise Int8Refused(f"{out}: {'; and '.join(reasons)}{searched}; nothing written", quantization)
        with atomic_path(out) as tmp:
            _write_metadata(trial.proto, reference.info, quantization, tmp)
    return Int8Report(out, out.stat().st_size, fp32_path.stat().st_size, quantization)


def _write_metadata(proto: onnx.ModelProto, info: ModelInfo, quantization: dict, path: Path) -> None:
    """The fp32 model's gapcam metadata with `quantization` added, in place of what the tools left, and
    the lowest versions the graph needs (the tools import every domain onnxruntime knows; older builds
    refuse unknown ones)."""
    stamp_lowest_versions(proto)
    kept = [p for p in proto.metadata_props if not p.key.startswith(PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    info = replace(info, quantization=quantization, min_onnxruntime=required_onnxruntime(default_opset(proto), "int8"))
    for key, value in info.to_props().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save_model(proto, path, save_as_external_data=False)


__getattr__ = moved_names("export.int8", {"recipe_calibration": "export.recipe_data"})  # moved in 0.2: it reads train's data

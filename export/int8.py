"""INT8 edge models: onnxruntime's static quantization (QDQ), kept only when the explanations survive it.

A quantized model is only worth shipping if it still says what the fp32 model says, and looks where
it looks. So every INT8 export is measured against its fp32 model on held-out images that
calibration never saw (`measure_fidelity`), and refused, with nothing written, when a figure misses
its bound (`FidelityGate`). The settings were chosen by measurement: see docs/int8.md.

The INT8 file is a gapcam model like any other: same input, outputs (float32) and metadata, plus
`gapcam.quantization` with the settings and the measured figures.
"""

from __future__ import annotations

import contextlib
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

CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
CALIBRATION_IMAGES = 100  # default number of images the activation ranges come from
HELD_OUT_IMAGES = 500  # default number of held-out images the gate measures on
MIN_HELD_OUT = 20  # fewer held-out images than this measure nothing a user could rely on


@dataclass(frozen=True)
class QuantizationSettings:
    """How the model is quantized: onnxruntime QDQ, int8 weights, uint8 activations, and these choices."""

    method: str = "percentile"  # activation ranges: "minmax", "entropy" or "percentile" (99.999th)
    per_channel: bool = True  # one weight scale per output channel (else one per tensor)
    float_tail: int = 0  # keep the last N conv layers in float (the CAM conv is the last)
    reduce_range: bool = False  # 7-bit weights: for x86 CPUs without VNNI, whose 8-bit dot products can saturate

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ExportError(f"calibration method must be one of {sorted(CALIBRATION_METHODS)}, got {self.method!r}")
        if self.float_tail < 0:
            raise ExportError(f"float_tail must be 0 or more, got {self.float_tail}")


@dataclass(frozen=True)
class FidelityGate:
    """The least an INT8 model must keep of its fp32 model on held-out images."""

    min_top1_agreement: float = 0.98  # share of images whose top class is the fp32 model's
    min_median_box_iou: float = 0.9  # median IoU of the top class's box with the fp32 model's
    min_median_cam_correlation: float = 0.95  # median Pearson correlation of the top class's raw CAM

    def failures(self, fidelity: dict) -> list[str]:
        """One phrase per figure below its bound, naming the figure and the option that sets it."""
        checks = [
            ("top-1 agreement", fidelity["top1_agreement"], self.min_top1_agreement, "--min-top1-agreement"),
            ("median box IoU", fidelity["box_iou"]["median"], self.min_median_box_iou, "--min-box-iou"),
            ("median CAM correlation", fidelity["cam_correlation"]["median"], self.min_median_cam_correlation, "--min-cam-correlation"),
        ]
        return [f"{name} {value:.3f} < {bound:g} ({option})" for name, value, bound, option in checks if not value >= bound]


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
    min_top1_agreement=0.0, min_median_box_iou=0.0, min_median_cam_correlation=-1.0
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


@dataclass
class Int8Report:
    path: Path
    size_bytes: int
    fp32_size_bytes: int
    quantization: dict  # what goes into the metadata: settings, calibration, fidelity, gate


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


def _last_convs(model_path: Path, count: int) -> list[str]:
    convs = [node.name for node in onnx.load(model_path).graph.node if node.op_type == "Conv"]
    return convs[len(convs) - count :] if count else []


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantization tools log warnings about the graph on the root logger: not the
    user's concern while the fidelity gate measures the result. The level is restored after."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_file(
    fp32_path: Path, out: Path, calibration: Sequence[ImageInput], spec: Preprocess, settings: QuantizationSettings
) -> tuple[list[str], list[str]]:
    """Write the QDQ model of `fp32_path` to `out` (no metadata yet); returns the conv nodes kept in
    float and one line per exact rewrite of the graph (`export.graph_prep`).

    The graph is prepared first (-inf padding folded into max pooling; non-finite constants refused
    with ExportError), then shape inference and graph optimization (onnxruntime's recommended pre-processing), then
    calibration on `calibration` in passes of `calibration_stride` images. (onnxruntime's own
    CalibMaxIntermediateOutputs is not used: in 1.31 its MinMax calibrator drops every full chunk.)
    """
    with tempfile.TemporaryDirectory(prefix="gapcam-int8-") as work, contextlib.redirect_stdout(io.StringIO()), _quiet_root_logger():
        graph, prepared = onnx.load(fp32_path), Path(work) / "prepared.onnx"
        try:
            changes = prepare_for_quantization(graph)
        except ExportError as err:
            raise ExportError(f"{fp32_path}: {err}") from None
        onnx.save_model(graph, Path(work) / "graph.onnx", save_as_external_data=False)
        quant_pre_process(str(Path(work) / "graph.onnx"), str(prepared))
        kept_float = _last_convs(prepared, settings.float_tail)
        quantize_static(
            str(prepared),
            str(out),
            _OneImageAtATime(calibration, spec),
            quant_format=QuantFormat.QDQ,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CALIBRATION_METHODS[settings.method],
            nodes_to_exclude=kept_float,
            extra_options={"CalibStridedMinMax": calibration_stride(len(calibration))},  # despite its name, used by every method
        )
    return kept_float, changes


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

    For the reference's top class of each image: top-1 agreement, the largest probability
    difference (any class), the correlation of the raw CAMs and the IoU of the boxes (median, 5th
    percentile, worst). With true `labels` and `boxes`: classification and GT-known localization
    accuracy (box of the true class's CAM at the model's threshold, IoU >= 0.5) of both.
    """
    agree, prob_gap, correlations, ious = [], 0.0, [], []
    correct: dict[str, list[bool]] = {"fp32": [], "int8": []}
    located: dict[str, list[bool]] = {"fp32": [], "int8": []}
    truth = None if labels is None or boxes is None else (labels, boxes)  # measured against only where both are given
    for start in range(0, len(images), batch_size):
        batch = [load_image(image) for image in images[start : start + batch_size]]  # decoded once for every run below
        ref = reference.run(batch)
        top = np.array([[r.classes[0]] for r in ref])
        chosen = top if truth is None else np.concatenate([top, truth[0][start : start + len(batch), None]], axis=1)
        cand = candidate.run(batch, classes=chosen)
        for r, c in zip(ref, cand, strict=True):
            agree.append(int(np.argmax(c.logits)) == r.classes[0])
            prob_gap = max(prob_gap, float(np.abs(r.probs - c.probs).max()))
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


def quantize_model(fp32_path: str | os.PathLike, options: Int8Options, name: str | os.PathLike | None = None) -> Int8Report:
    """Quantize the gapcam model at `fp32_path`, measure it against the fp32 model, and write it to
    `options.out` (default NAME.int8.onnx beside `name` or `fp32_path`) only if it passes the gate.

    Raises ExportError naming each failing figure, or what could not be read; nothing is written then.
    """
    fp32_path = Path(fp32_path)
    out = Path(options.out) if options.out is not None else int8_path(name or fp32_path)
    reference = CamSession(fp32_path, providers=[CPU])
    data, settings = options.data, options.settings
    with tempfile.TemporaryDirectory(prefix="gapcam-int8-") as work:
        candidate_path = Path(work) / "model.int8.onnx"
        try:
            kept_float, graph_changes = quantize_file(fp32_path, candidate_path, data.calibration, reference.preprocessing, settings)
        except ExportError:
            raise
        except Exception as err:  # onnxruntime's quantization tools raise many unrelated types
            raise ExportError(f"{out}: onnxruntime could not quantize the model ({first_line(err)}); nothing written") from None
        proto = onnx.load(candidate_path)
        stamp_lowest_versions(proto)  # the tools import every domain onnxruntime knows; older builds refuse unknown ones
        quantization = {
            "precision": "int8",
            "format": "QDQ",
            "weights": f"int8 {'per channel' if settings.per_channel else 'per tensor'}{', 7-bit range' if settings.reduce_range else ''}",
            "activations": "uint8 per tensor",
            "calibration": {"method": settings.method, "images": len(data.calibration), "source": data.source},
            "float_nodes": kept_float,
            "graph_preparation": graph_changes,  # exact rewrites before calibration (export.graph_prep)
            "fp32_sha256": sha256_file(fp32_path),
            "onnxruntime": onnxruntime_version(),
        }
        _write_metadata(proto, reference.info, quantization, candidate_path)
        candidate = CamSession(candidate_path, providers=[CPU])
        fidelity = measure_fidelity(reference, candidate, data.held_out, data.held_out_labels, data.held_out_boxes)
        fidelity["source"] = data.source
        speed = measure_speed(reference, candidate, options.speed_gate)
        failed, slow = options.gate.failures(fidelity), options.speed_gate.failure(speed)
        reasons = [f"the INT8 model fails its fidelity gate on {fidelity['images']} held-out images: {'; '.join(failed)}"] if failed else []
        reasons += [slow] if slow else []
        if reasons:  # both gates' figures, so that a user sees everything that stands in the way at once
            raise ExportError(f"{out}: {'; and '.join(reasons)}; nothing written")
        quantization.update(fidelity=fidelity, gate=asdict(options.gate), speed=speed, speed_gate=asdict(options.speed_gate))
        with atomic_path(out) as tmp:
            _write_metadata(proto, reference.info, quantization, tmp)
    return Int8Report(out, out.stat().st_size, fp32_path.stat().st_size, quantization)


def _write_metadata(proto: onnx.ModelProto, info: ModelInfo, quantization: dict, path: Path) -> None:
    """The fp32 model's gapcam metadata with `quantization` added, in place of what the tools left."""
    kept = [p for p in proto.metadata_props if not p.key.startswith(PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    info = replace(info, quantization=quantization, min_onnxruntime=required_onnxruntime(default_opset(proto), "int8"))
    for key, value in info.to_props().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save_model(proto, path, save_as_external_data=False)


__getattr__ = moved_names("export.int8", {"recipe_calibration": "export.recipe_data"})  # moved in 0.2: it reads train's data

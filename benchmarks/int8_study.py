"""How to quantize: every INT8 setting `export --int8` offers, measured against the fp32 model.

    .venv/bin/python benchmarks/int8_study.py demo/shapes.pt demo/shapes.onnx > study.md

Two models: the demo's shapes model (trained; calibrated on its training split, measured on 500
validation images with true boxes) and a chest-X-ray-like resnet18-GAP (K=1024, 200x256 gray,
random weights; shapes images rendered at 256 as its data, 200 held out). For each: calibration
method x per-channel/per-tensor weights x the last conv layer in float or not, then the number of
calibration images for the default setting. Every figure comes from `export.int8.measure_fidelity`
through `quantize_model`, with the gate switched off so that every setting is reported.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from runtime_bench import build  # a random-weight GapCam of a recipe, exported (benchmarks/ is this script's folder)

from export.int8 import NO_GATE, NO_SPEED_GATE, CalibrationData, Int8Options, QuantizationSettings, quantize_model
from export.recipe_data import recipe_calibration
from runtime.evaluation.shapes import render_split
from train.recipes import CHEST_XRAY

SETTINGS = [
    QuantizationSettings(method=method, per_channel=per_channel, float_tail=tail)
    for method in ("minmax", "entropy", "percentile")
    for per_channel in (True, False)
    for tail in (0, 1)
] + [QuantizationSettings(reduce_range=True)]
HEADER = (
    "| setting | top-1 agreement | largest prob. difference | CAM corr. median / worst | box IoU median / p5 / worst "
    "| GT-known loc. fp32 / int8 | size | quantize s |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
)


def row(label: str, fp32: Path, data: CalibrationData, settings: QuantizationSettings, folder: Path) -> str:
    start = time.perf_counter()
    report = quantize_model(fp32, Int8Options(data, settings, NO_GATE, NO_SPEED_GATE, out=folder / "candidate.int8.onnx"))
    seconds = time.perf_counter() - start
    f = report.quantization["fidelity"]
    loc = f.get("gt_known_localization_accuracy")
    located = f"{loc['fp32']:.3f} / {loc['int8']:.3f}" if loc else "no boxes"
    return (
        f"| {label} | {f['top1_agreement']:.3f} | {f['max_prob_difference']:.3f} "
        f"| {f['cam_correlation']['median']:.4f} / {f['cam_correlation']['min']:.3f} "
        f"| {f['box_iou']['median']:.3f} / {f['box_iou']['p05']:.3f} / {f['box_iou']['min']:.3f} "
        f"| {located} | {report.size_bytes / 1e6:.2f} MB | {seconds:.1f} |"
    )


def describe(settings: QuantizationSettings) -> str:
    extras = (", last conv float" if settings.float_tail else "") + (", 7-bit weights (--reduce-range)" if settings.reduce_range else "")
    return f"{settings.method}, {'per-channel' if settings.per_channel else 'per-tensor'}{extras}"


def resnet_model(folder: Path) -> tuple[Path, CalibrationData]:
    path = build(CHEST_XRAY, folder)[1]  # random weights, the chest X-ray recipe's resnet18-GAP
    images = render_split(300, 0, "train", 256).images
    return path, CalibrationData(list(images[:100]), list(images[100:]), "shapes rendered at 256 (100 calibrate, 200 held out)")


def table(title: str, fp32: Path, data: CalibrationData, folder: Path, counts: tuple[int, ...], sampler) -> list[str]:
    lines = [f"### {title}", "", f"fp32 file: {fp32.stat().st_size / 1e6:.2f} MB. {data.source}.", "", HEADER]
    lines += [row(describe(settings), fp32, data, settings, folder) for settings in SETTINGS]
    lines += ["", f"Calibration images, default setting ({describe(QuantizationSettings())}):", "", HEADER]
    lines += [row(f"{count} images", fp32, sampler(count), QuantizationSettings(), folder) for count in counts]
    return lines + [""]


def main(checkpoint: Path, demo_onnx: Path) -> None:
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)

        def demo(count: int) -> CalibrationData:
            return recipe_calibration(checkpoint, calibration_images=count, held_out_images=500)

        lines = table("The demo's shapes model (trained)", demo_onnx, demo(100), folder, (25, 100, 300), demo)
        resnet, data = resnet_model(folder)

        def resample(count: int) -> CalibrationData:
            return CalibrationData(list(data.calibration[:count]), data.held_out, data.source)

        lines += table("resnet18-GAP, 200x256 gray, random weights", resnet, data, folder, (25, 100), resample)
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

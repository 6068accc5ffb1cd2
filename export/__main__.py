"""`python -m export CHECKPOINT [-o OUT]`: write the ONNX file and report parity."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from export.byo import export_torchvision
from export.errors import ExportError
from export.int8 import (
    CALIBRATION_IMAGES,
    CALIBRATION_METHODS,
    HELD_OUT_IMAGES,
    MIN_HELD_OUT,
    FidelityGate,
    Int8Options,
    Int8Report,
    QuantizationSettings,
    SpeedGate,
    folder_calibration,
)
from export.onnx_export import OPSET, export_checkpoint
from export.recipe_data import recipe_calibration
from runtime.cli import cli_errors
from runtime.formats.files import read_text_file
from runtime.inference.compat import OLDEST_ONNXRUNTIME, OPSETS
from runtime.inputs.image import IMAGENET_MEAN, IMAGENET_STD

INT8_ONLY = {
    "calibration",
    "data",
    "calibration-images",
    "held-out-images",
    "calibration-method",
    "per-tensor",
    "reduce-range",
    "float-tail",
    "max-float-layers",
    "min-top1-agreement",
    "min-box-iou",
    "min-cam-correlation",
    "min-positive-agreement",
    "max-prob-difference",
    "min-speedup",
}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="ONNX path [default: CHECKPOINT with .onnx].")
@click.option(
    "--opset",
    type=click.IntRange(OPSETS[0], OPSETS[-1]),
    default=OPSET,
    show_default=True,
    help=f"ONNX opset version ({OPSETS[0]} runs on onnxruntime {OLDEST_ONNXRUNTIME} and newer; docs/compatibility.md).",
)
@click.option("--arch", help="CHECKPOINT is a state dict of this torchvision classifier (resnet50, densenet121, ...).")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False), help="With --arch: class names, one per line.")
@click.option("--input-size", nargs=2, type=click.IntRange(min=8), default=(224, 224), show_default=True, help="With --arch: H W.")
@click.option("--mean", nargs=3, type=float, default=IMAGENET_MEAN, show_default=True, help="With --arch: RGB mean.")
@click.option("--std", nargs=3, type=float, default=IMAGENET_STD, show_default=True, help="With --arch: RGB std.")
@click.option("--features", help="With --arch: the module whose output is pooled [default: known per family].")
@click.option("--fc", help="With --arch: the final linear layer [default: known per family].")
@click.option(
    "--faces/--no-faces",
    "face_crops",
    default=None,
    help="The model's inputs are face crops, so apps find faces first [default: the recipe's; fer: yes].",
)
@click.option(
    "--multilabel",
    is_flag=True,
    help="With --arch: a multi-label model (sigmoid outputs, each class present at probability 0.5 or more).",
)
@click.option("--int8", is_flag=True, help="Also write an INT8 model, OUT with .int8.onnx, if it passes its fidelity gate.")
@click.option(
    "--calibration",
    type=click.Path(exists=True, file_okay=False),
    help="With --int8: calibrate on the images in this folder [default: the recipe's training split].",
)
@click.option("--data", type=click.Path(exists=True), help="With --int8: the recipe's dataset [default: where training found it].")
@click.option(
    "--calibration-images",
    type=click.IntRange(min=1),
    default=CALIBRATION_IMAGES,
    show_default=True,
    help="With --int8: images that set the activation ranges.",
)
@click.option(
    "--held-out-images",
    type=click.IntRange(min=MIN_HELD_OUT),
    default=HELD_OUT_IMAGES,
    show_default=True,
    help="With --int8: most held-out images the gate measures on.",
)
@click.option(
    "--calibration-method",
    type=click.Choice(sorted(CALIBRATION_METHODS)),
    default=QuantizationSettings.method,
    show_default=True,
    help="With --int8: how activation ranges are set.",
)
@click.option("--per-tensor", is_flag=True, help="With --int8: one weight scale per tensor instead of per output channel.")
@click.option(
    "--reduce-range", is_flag=True, help="With --int8: 7-bit weights, for x86 CPUs without VNNI (their 8-bit products can saturate)."
)
@click.option(
    "--float-tail", type=click.IntRange(min=0), default=0, show_default=True, help="With --int8: keep the last N conv layers in float."
)
@click.option(
    "--max-float-layers",
    type=click.IntRange(min=0),
    default=QuantizationSettings.max_float_layers,
    show_default=True,
    help="With --int8: if the fidelity gate fails, keep up to N more layers in float, most sensitive first, "
    "while the speed gate passes (0: never).",
)
@click.option(
    "--min-top1-agreement",
    type=click.FloatRange(0, 1),
    default=FidelityGate.min_top1_agreement,
    show_default=True,
    help="With --int8: gate on the share of same top classes.",
)
@click.option(
    "--min-box-iou",
    type=click.FloatRange(0, 1),
    default=FidelityGate.min_median_box_iou,
    show_default=True,
    help="With --int8: gate on the median IoU of the boxes.",
)
@click.option(
    "--min-positive-agreement",
    type=click.FloatRange(0, 1),
    default=FidelityGate.min_positive_set_agreement,
    show_default=True,
    help="With --int8, multi-label models: gate on the share of images with the same positive classes.",
)
@click.option(
    "--max-prob-difference",
    type=click.FloatRange(0, 1),
    default=FidelityGate.max_prob_difference_p95,
    show_default=True,
    help="With --int8, multi-label models: gate on the 95th percentile of every class's probability difference.",
)
@click.option(
    "--min-speedup",
    type=click.FloatRange(min=0),
    default=SpeedGate.min_speedup,
    show_default=True,
    help="With --int8: refuse an INT8 model less than this many times as fast as fp32 here (measured at batch 1 and 32).",
)
@click.option(
    "--min-cam-correlation",
    type=click.FloatRange(-1, 1),
    default=FidelityGate.min_median_cam_correlation,
    show_default=True,
    help="With --int8: gate on the median correlation of the raw CAMs.",
)
@click.pass_context
@cli_errors
def main(
    ctx: click.Context,
    /,
    checkpoint: str,
    out: str | None,
    opset: int,
    arch: str | None,
    labels_file: str | None,
    input_size,
    mean,
    std,
    features,
    fc,
    face_crops: bool | None,
    multilabel: bool,
    **quantization,
) -> None:
    """Export CHECKPOINT (from `python -m train`, or a torchvision state dict with --arch) to ONNX with
    logits and features outputs; fail unless torch and onnxruntime agree. With --int8, also an INT8
    model for CPUs, kept only if its predictions and CAMs follow the fp32 model's."""
    int8 = int8_options(ctx, checkpoint, arch, **quantization)
    if arch:
        if not labels_file:
            raise ExportError("--arch needs --labels FILE (class names, one per line)")
        labels = [line.strip() for line in read_text_file(labels_file, "labels file").splitlines() if line.strip()]
        target = Path(out) if out else Path(checkpoint).with_suffix(".onnx")
        report = export_torchvision(
            arch,
            checkpoint,
            labels,
            target,
            size=tuple(input_size),
            mean=mean,
            std=std,
            features=features,
            fc=fc,
            opset=opset,
            int8=int8,
            face_crops=bool(face_crops),
            activation="sigmoid" if multilabel else "softmax",
        )
    else:
        if multilabel:
            raise ExportError("--multilabel is for --arch models: a checkpoint says its own activation")
        report = export_checkpoint(checkpoint, out, opset, int8, face_crops)
    parity = report.parity
    click.echo(f"inputs:  {', '.join(report.inputs)}")
    click.echo(f"outputs: {', '.join(report.outputs)}")
    click.echo(f"opset {report.opset}, {report.size_bytes / 1e6:.2f} MB, one file, checker passed")
    click.echo(f"parity on {', '.join(parity['inputs'])} ({parity['provider']}), largest difference vs torch:")
    for name in ("logits", "features", "cams", "class_maps"):
        if name not in parity:
            continue
        click.echo(
            f"  {name:<9} {parity[name]['max_abs']:.2e} abs, {parity[name]['relative']:.2e} relative (tolerance {parity['tolerance']:.0e})"
        )
    click.echo(f"  argmax agrees: {'yes' if parity['argmax_agree'] else 'NO'}")
    click.echo(f"wrote {report.path}")
    if report.int8:
        for line in int8_summary(report.int8):
            click.echo(line)


def int8_options(
    ctx: click.Context,
    checkpoint: str,
    arch: str | None,
    int8: bool,
    calibration,
    data,
    calibration_images,
    held_out_images,
    calibration_method,
    per_tensor,
    reduce_range,
    float_tail,
    max_float_layers,
    min_top1_agreement,
    min_box_iou,
    min_cam_correlation,
    min_positive_agreement,
    max_prob_difference,
    min_speedup,
) -> Int8Options | None:
    """The --int8 request from the command line, with its calibration data; None without --int8."""
    if not int8:
        given = [
            name
            for name in ctx.params
            if name.replace("_", "-") in INT8_ONLY and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
        ]
        if given:
            raise ExportError(f"--{given[0].replace('_', '-')} needs --int8")
        return None
    if calibration:
        source = folder_calibration(calibration, calibration_images, held_out_images)
    elif arch:
        raise ExportError("--int8 with --arch needs --calibration FOLDER (images like those the model will see)")
    else:
        source = recipe_calibration(checkpoint, data, calibration_images, held_out_images)
    return Int8Options(
        data=source,
        settings=QuantizationSettings(
            method=calibration_method,
            per_channel=not per_tensor,
            float_tail=float_tail,
            reduce_range=reduce_range,
            max_float_layers=max_float_layers,
        ),
        gate=FidelityGate(min_top1_agreement, min_box_iou, min_cam_correlation, min_positive_agreement, max_prob_difference),
        speed_gate=SpeedGate(min_speedup),
    )


def int8_summary(report: Int8Report) -> list[str]:
    """The INT8 model's settings and its fidelity to the fp32 model, as a table."""
    q = report.quantization
    fidelity, gate, calibration = q["fidelity"], q["gate"], q["calibration"]
    kept = f", {len(q['float_nodes'])} layer(s) kept float" if q["float_nodes"] else ""
    rows = [
        f"int8: {q['format']}, {q['weights']} weights, {q['activations']} activations, {calibration['method']} calibration{kept}",
        f"  calibrated on {calibration['images']} images, measured on {fidelity['images']} held-out images ({calibration['source']})",
        f"  {'figure':<38} {'int8 vs fp32':>14}  gate",
        f"  {'top-1 agreement':<38} {fidelity['top1_agreement']:>14.3f}  >= {gate['min_top1_agreement']:g}",
        f"  {'largest probability difference':<38} {fidelity['max_prob_difference']:>14.3f}",
        f"  {'raw CAM correlation, median':<38} {fidelity['cam_correlation']['median']:>14.4f}  >= {gate['min_median_cam_correlation']:g}",
        f"  {'raw CAM correlation, worst':<38} {fidelity['cam_correlation']['min']:>14.4f}",
        f"  {'box IoU, median':<38} {fidelity['box_iou']['median']:>14.3f}  >= {gate['min_median_box_iou']:g}",
        f"  {'box IoU, 5th percentile / worst':<38} {fidelity['box_iou']['p05']:>6.3f} / {fidelity['box_iou']['min']:.3f}",
    ]
    if "positive_set_agreement" in fidelity:
        rows += [
            f"  {'positive-set agreement':<38} {fidelity['positive_set_agreement']:>14.3f}  >= {gate['min_positive_set_agreement']:g}",
            f"  {'probability difference, 95th pct':<38} {fidelity['prob_difference']['p95']:>14.4f}  "
            f"<= {gate['max_prob_difference_p95']:g}",
        ]
    for key, name in (("classification_accuracy", "classification accuracy"), ("gt_known_localization_accuracy", "GT-known localization")):
        if key in fidelity:
            rows.append(f"  {name + ', fp32 / int8':<38} {fidelity[key]['fp32']:>6.3f} / {fidelity[key]['int8']:.3f}")
    speed = q["speed"]
    for batch, figures in speed["batches"].items():
        rows.append(
            f"  {'inference at batch ' + batch + ', fp32 / int8':<38} {figures['fp32_ms']:>6.1f} / {figures['int8_ms']:.1f} ms  "
            f"{figures['speedup']:.2f}x  >= {q['speed_gate']['min_speedup']:g}"
        )
    rows.append(f"  speed measured on {speed['machine']}: it holds for this machine")
    rows.append(f"  size {report.fp32_size_bytes / 1e6:.2f} MB -> {report.size_bytes / 1e6:.2f} MB")
    if "float_search" in q:
        rows += float_search_rows(q["float_search"])
    rows.append(f"wrote {report.path}")
    return rows


def float_search_rows(search: dict) -> list[str]:
    """The search for float layers, one row per step: the layer it kept in float and both gates' figures."""
    batches = " / ".join(search["steps"][0]["speedup"])
    rows = [
        f"  the fidelity gate failed, so layers were kept in float one at a time, most sensitive first "
        f"(--max-float-layers {search['max_float_layers']}):",
        f"    {'step':<4}  {'layer kept in float':<32} {'top-1':>6} {'CAM corr.':>9} {'box IoU':>7}  speed-up at batch {batches}",
    ]
    for i, step in enumerate(search["steps"]):
        speedups = " / ".join(f"{s:.2f}x" for s in step["speedup"].values())
        rows.append(
            f"    {i:<4}  {step['float_layer'] or '(before the search)':<32} {step['top1_agreement']:>6.3f} "
            f"{step['cam_correlation_median']:>9.4f} {step['box_iou_median']:>7.3f}  {speedups}"
        )
    return rows


if __name__ == "__main__":
    main()

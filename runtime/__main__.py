"""`python -m runtime MODEL INPUT... --out DIR`: labels, boxes, CAM overlays and an HTML report;
`python -m runtime eval MODEL DATA`: localization metrics; `python -m runtime explain MODEL IMAGE`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from runtime.cli import DefaultGroup, cli_errors
from runtime.errors import CamError
from runtime.evaluation import chestxray14
from runtime.evaluation.datasets import ImageSet, ground_truth, read_images
from runtime.evaluation.faithfulness import (
    BASELINES,
    PERCENTILES,
    ROAD_NOISE,
    FaithfulnessSettings,
    evaluate_faithfulness,
    parse_percentiles,
    summary_lines,
    write_faithfulness_report,
)
from runtime.evaluation.localization import evaluate_localization, write_localization_report
from runtime.faces.session import FaceSession
from runtime.formats.files import atomic_path
from runtime.inference.session import CamSession
from runtime.inputs.image import IMAGE_SUFFIXES, collect_images
from runtime.maps.boxes import THRESHOLD_STEP
from runtime.maps.methods import METHODS
from runtime.reports.overlay import COLORMAPS
from runtime.reports.report import HtmlReport, ResultLog, explain_figure
from runtime.runs import RunOptions, explain_images, explain_video, unique_names, video_suffix
from runtime.video.frames import VideoSource, is_video
from runtime.video.stream import check_smoothing

model_argument = click.argument("model")
provider_option = click.option(
    "--provider", "providers", multiple=True, help="onnxruntime provider(s); default CUDA when it works, else CPU."
)
method_option = click.option(
    "--method",
    type=click.Choice(list(METHODS)),
    default="cam",
    show_default=True,
    help="Explanation method (runtime.maps.methods): " + "; ".join(m.summary for m in METHODS.values()) + ".",
)
colormap_option = click.option("--colormap", type=click.Choice(sorted(COLORMAPS)), default="jet", show_default=True)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout, for scripts.")
alpha_option = click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Heatmap opacity.")


def parse_dicom_window(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    """--dicom-window: an index >= 0, or `none`."""
    if value.strip().lower() == "none":
        return None
    if not value.strip().isdigit():
        raise click.BadParameter(f"expected a window index (0, 1, ...) or none, got {value!r}")
    return int(value)


dicom_window_option = click.option(
    "--dicom-window",
    default="0",
    show_default=True,
    callback=parse_dicom_window,
    help="DICOM files: which VOI LUT or window to show them through (0: the file's first, as a viewer opens it), "
    "or none (the image's own range). See docs/dicom.md.",
)


class ModelFirst(DefaultGroup):
    """`python -m runtime MODEL ...` is short for `python -m runtime predict MODEL ...`."""

    default_command = "predict"


@click.group(cls=ModelFirst, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Run gapcam models: `python -m runtime MODEL INPUT... --out DIR` (MODEL: an .onnx file, a
    package or a package name), `python -m runtime eval MODEL DATA`, `python -m runtime explain MODEL IMAGE`."""


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@main.command("predict")
@model_argument
@click.argument("inputs", nargs=-1, type=click.Path(exists=True))
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), default="cam_out", show_default=True, help="Folder for overlays and reports."
)
@click.option(
    "--topk",
    type=click.IntRange(min=1),
    help="Explain the k most probable classes [default: the top class; multi-label models: every positive finding].",
)
@click.option("--threshold", type=click.FloatRange(0, 1), help="CAM box threshold, as a share of the CAM's max [default: the model's].")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images (or frames) per inference call.")
@click.option(
    "--faces/--no-faces",
    "find_faces",
    default=None,
    help="Find every face first and explain each (gapcam[faces]) [default: the model's metadata says; FER models: yes].",
)
@click.option("--camera", help="Explain a live source (gapcam[video]): a camera index such as 0, or an rtsp:// or http(s):// URL.")
@click.option("--every", default=1, show_default=True, type=click.IntRange(min=1), help="Videos: explain every N-th frame.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), help="Videos: explain at most F frames a second.")
@click.option(
    "--smooth",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Videos: weight of the past in each face's moving average of logits and maps (0: none).",
)
@click.option(
    "--deletion-curves",
    "with_curves",
    is_flag=True,
    help="Images: draw in each report card the deletion and insertion curves of its first class (as `faithfulness` "
    "measures them, 20 steps, constant baseline: 40 more inference inputs per image). Not with faces.",
)
@dicom_window_option
@method_option
@colormap_option
@alpha_option
@provider_option
@json_option
@cli_errors
def predict(
    model: str,
    inputs: tuple[str, ...],
    out_dir: str,
    topk: int | None,
    threshold: float | None,
    batch_size: int,
    find_faces: bool | None,
    camera: str | None,
    every: int,
    fps: float | None,
    smooth: float,
    with_curves: bool,
    dicom_window: int | None,
    method: str,
    colormap: str,
    alpha: float,
    providers: tuple[str, ...],
    as_json: bool,
) -> None:
    """Classify images, videos or a camera (files, or every image in folders) and draw where MODEL looked.

    Writes one overlay PNG per image, one annotated video per video (OUT/clip.mp4, one results line
    per frame), results.json, results.jsonl and a self-contained report.html. A model trained on
    face crops finds every face first. A file named on the command line must be readable (else
    nothing is written); an unreadable file found in a folder is reported and skipped.
    """
    session = CamSession(model, providers=list(providers) or None, box_threshold=threshold, dicom_window=dicom_window)
    if topk is not None and topk > len(session.labels):
        raise CamError(f"--topk {topk}: the model has {len(session.labels)} classes")
    if not inputs and camera is None:
        raise CamError("give images, videos or folders, or --camera SOURCE")
    finds_faces = session.info.face_crops if find_faces is None else find_faces
    if with_curves and finds_faces:
        raise CamError(
            "--deletion-curves perturbs whole model inputs, not the faces found in photos: add --no-faces (each image one input)"
        )
    faces = FaceSession(session) if finds_faces else None
    curves = FaithfulnessSettings(batch_size=batch_size) if with_curves else None
    options = RunOptions(session, faces, topk, method, batch_size, alpha, colormap, every, fps, smooth, curves)
    videos = [item for item in inputs if Path(item).is_file() and is_video(item)]
    paths, named, skipped = collect_images([item for item in inputs if item not in videos])
    if inputs and not paths and not videos:
        raise CamError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) or videos in {', '.join(inputs)}")
    if with_curves and not paths:
        raise CamError("--deletion-curves draws in report.html's image cards, and this run has no images (videos and cameras have none)")
    for path in sorted(named):
        session.load_image(path)  # fail before writing anything
    for video in videos:
        VideoSource(video).close()  # likewise: a video that cannot be opened is refused up front
    if camera is not None:
        VideoSource(camera, live=True).close()  # and a camera (it is opened again to run)
    check_smoothing(smooth, method)
    out = Path(out_dir)
    report, log = HtmlReport(out / "report.html", f"gapcam: {Path(str(session.path)).name}, {METHODS[method].summary}"), ResultLog(out)
    table, faceless = explain_images(options, paths, out, log, report, skipped) if paths else ([], 0)
    overlays = log.count
    errors: list[str] = []
    sources = [*videos, *([camera] if camera is not None else [])]
    targets = unique_names([*videos, *(["camera"] if camera is not None else [])], video_suffix)
    for source, target in zip(sources, targets, strict=True):
        frames, error = explain_video(options, source, out / target, log, live=source == camera)
        table.append(f"{source:<40} {plural(frames, 'frame')} -> {out / target}")
        errors += [error] if error else []
    log.finish(
        {
            "model": str(session.path),
            "providers": session.providers,
            "labels": session.labels,
            "activation": session.info.activation,
            "thresholds": session.info.thresholds,
            "method": method,
            "method_summary": METHODS[method].summary,
            "faces": faces is not None,
            "curves": None if curves is None else {"steps": curves.steps, "baseline": curves.baseline},
            "skipped": [{"file": f, "error": e} for f, e in skipped],
            "errors": errors,
        }
    )
    report.finish(skipped)
    for _, reason in skipped:
        click.echo(f"skipped {reason}", err=True)
    if session.info.face_crops and faces is None:
        click.echo(f"note: {model} was trained on face crops and --no-faces reads each whole image as one face", err=True)
    if faceless:
        click.echo(
            f"note: no face found in {faceless} of {plural(overlays, 'image')}; "
            "if they are face crops already, --no-faces reads each whole image as one face",
            err=True,
        )
    videos_written = f", {plural(len(sources), 'annotated video')}" if sources else ""
    if as_json:
        click.echo((out / "results.json").read_text(encoding="utf-8"))
    else:
        click.echo("\n".join([f"{'file':<40} {'label':<16} {'prob':>6}  box (x0, y0, x1, y1)", *table]))
        click.echo(
            f"wrote {plural(overlays, 'overlay')}{videos_written}, results.json, results.jsonl and report.html to {out}"
            + (f"; skipped {len(skipped)}" if skipped else "")
        )
    if errors:
        raise CamError("; ".join(errors))


@main.command("eval")
@model_argument
@click.argument("data")
@click.option("--count", default=300, show_default=True, type=click.IntRange(min=1), help="Images of the built-in shapes test split.")
@click.option("--seed", default=0, show_default=True, help="Seed of the built-in shapes test split.")
@click.option(
    "--threshold-step",
    default=THRESHOLD_STEP,
    show_default=True,
    type=click.FloatRange(0.001, 0.5),
    help="Grid of CAM thresholds for MaxBoxAcc.",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="localization", show_default=True)
@click.option(
    "--faithfulness",
    "with_faithfulness",
    is_flag=True,
    help="Also the faithfulness metrics of the method (ROAD, Average Drop, deletion/insertion; slower): faithfulness.json and .png.",
)
@method_option
@provider_option
@json_option
@cli_errors
def eval_command(
    model: str,
    data: str,
    count: int,
    seed: int,
    threshold_step: float,
    out_dir: str,
    with_faithfulness: bool,
    method: str,
    providers: tuple[str, ...],
    as_json: bool,
) -> None:
    """Localization metrics of MODEL on DATA: `shapes` (built in, boxes and masks), CUB_200_2011/ as
    it ships (its test split; masks from segmentations/ when present), or a folder with boxes.csv
    (path,x0,y0,x1,y1,label) and optional masks/<image stem>.png."""
    session = CamSession(model, providers=list(providers) or None)
    if chestxray14.is_chestxray14(Path(data)):
        if with_faithfulness:
            raise CamError(f"{data}: --faithfulness is not measured on ChestX-ray14 (multi-label); run `faithfulness` on its images")
        eval_chestxray14(session, Path(data), Path(out_dir), method, as_json)
        return
    truth = ground_truth(data, session.labels, count, seed, session.input_size[0])
    with click.progressbar(length=len(truth.images), label="evaluating", file=sys.stderr) as bar:
        metrics = evaluate_localization(session, truth, method=method, threshold_step=threshold_step, progress=bar.update)
    title = f"{Path(str(session.path)).name} on {data}"
    written = write_localization_report(metrics, Path(out_dir), title)
    if with_faithfulness:
        with click.progressbar(length=len(truth.images), label="faithfulness", file=sys.stderr) as bar:
            faithful = evaluate_faithfulness(session, ImageSet.of(truth), [method], progress=bar.update)
        written += write_faithfulness_report(faithful, Path(out_dir), title)
    if as_json:
        shown = {key: value for key, value in metrics.items() if not key.startswith("box_accuracy_curve")}
        click.echo(json.dumps({**shown, **({"faithfulness": faithful} if with_faithfulness else {})}, indent=2))
        return
    click.echo(f"{metrics['images']} images, method {method}, box threshold {metrics['box_threshold']:.2f}")
    click.echo(f"classification accuracy          {metrics['classification_accuracy']:.4f}")
    click.echo(f"top-1 localization accuracy      {metrics['top1_localization_accuracy']:.4f}")
    click.echo(f"GT-known localization accuracy   {metrics['gt_known_localization_accuracy']:.4f}")
    for delta, best in metrics["max_box_accuracy"].items():
        click.echo(f"MaxBoxAcc @ IoU {delta}             {best['value']:.4f} (threshold {best['threshold']:.2f})")
    click.echo(f"mean MaxBoxAcc (0.3, 0.5, 0.7)   {metrics['mean_max_box_accuracy']:.4f}")
    click.echo(
        f"MaxBoxAccV2 (all components)     {metrics['mean_max_box_accuracy_v2']:.4f} "
        f"(" + ", ".join(f"@{d} {best['value']:.4f}" for d, best in metrics["max_box_accuracy_v2"].items()) + ")"
    )
    click.echo(f"PxAP                             {metrics['pxap']:.4f}" if metrics["pxap"] is not None else "PxAP: no masks")
    if with_faithfulness:
        click.echo("\n".join(summary_lines(faithful)))
    click.echo("wrote " + ", ".join(str(p) for p in written))


def eval_chestxray14(session: CamSession, folder: Path, out_dir: Path, method: str, as_json: bool) -> None:
    """`eval MODEL ChestX-ray14/`: Wang et al.'s localization table and the test list's AUROC."""
    plan = chestxray14.plan_chestxray14(session, chestxray14.read_chestxray14(folder))
    with click.progressbar(length=plan.runs, label="evaluating", file=sys.stderr) as bar:
        metrics = chestxray14.evaluate_chestxray14(session, plan, method=method, progress=bar.update)
    written = chestxray14.write_chestxray14_report(metrics, out_dir, f"{Path(str(session.path)).name} on ChestX-ray14")
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    click.echo("\n".join([*chestxray14.summary_lines(metrics), "wrote " + ", ".join(str(p) for p in written)]))


@main.command("explain")
@model_argument
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--all-classes", is_flag=True, help="One CAM per class (else the --topk most probable).")
@click.option("--topk", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--out", type=click.Path(dir_okay=False), help="Figure path [default: IMAGE stem + _explain.png].")
@dicom_window_option
@method_option
@colormap_option
@alpha_option
@provider_option
@cli_errors
def explain(
    model: str,
    image: str,
    all_classes: bool,
    topk: int,
    out: str | None,
    dicom_window: int | None,
    method: str,
    colormap: str,
    alpha: float,
    providers: tuple[str, ...],
) -> None:
    """A figure with the CAM of each class beside the image, with its probability."""
    session = CamSession(model, providers=list(providers) or None, dicom_window=dicom_window)
    classes = list(range(len(session.labels))) if all_classes else None
    picture = session.load_image(image)
    result = session.run(picture, classes=classes, topk=min(topk, len(session.labels)), method=method)[0]
    figure = explain_figure(session, picture, result, colormap=colormap, alpha=alpha)
    target = Path(out) if out else Path(f"{Path(image).stem}_explain.png")
    with atomic_path(target) as tmp:
        figure.save(tmp, format="PNG")
    for c, label in zip(result.classes, result.labels, strict=True):
        click.echo(f"{label:<16} {result.probs[c]:.4f}")
    click.echo(f"wrote {target}")


@main.command("faithfulness")
@model_argument
@click.argument("data")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="faithfulness", show_default=True)
@click.option(
    "--method",
    "methods",
    multiple=True,
    type=click.Choice(list(METHODS)),
    help="Explanation method(s) to score, repeatable (runtime.maps.methods) [default: all].",
)
@click.option("--count", default=300, show_default=True, type=click.IntRange(min=1), help="Images of the built-in shapes test split.")
@click.option("--seed", default=0, show_default=True, help="Seed of the built-in shapes test split.")
@click.option(
    "--percentiles",
    default=",".join(map(str, PERCENTILES)),
    show_default=True,
    help="ROAD: percents of pixels removed, comma-separated, each within (0, 100).",
)
@click.option("--noise", default=ROAD_NOISE, show_default=True, type=float, help="ROAD: std of the imputation noise (model input units).")
@click.option("--noise-seed", default=0, show_default=True, help="ROAD: seed of the imputation noise.")
@click.option("--steps", default=20, show_default=True, type=int, help="Deletion and insertion: intervals of the curves.")
@click.option("--baseline", type=click.Choice(BASELINES), default="constant", show_default=True, help="Deletion and insertion baseline.")
@click.option("--batch-size", default=64, show_default=True, type=int, help="Images per map call; perturbed inputs per inference call.")
@provider_option
@json_option
@cli_errors
def faithfulness(
    model: str,
    data: str,
    out_dir: str,
    methods: tuple[str, ...],
    count: int,
    seed: int,
    percentiles: str,
    noise: float,
    noise_seed: int,
    steps: int,
    baseline: str,
    batch_size: int,
    providers: tuple[str, ...],
    as_json: bool,
) -> None:
    """Whether MODEL's maps show what it used, from the model alone: ROAD, Average Drop and
    Increase, deletion and insertion AUC per method, and the pointing game where DATA has boxes.

    DATA: `shapes`, a folder with boxes.csv, CUB_200_2011/, or any folder of images (labelled by
    class folders named for the model's labels, else the predicted class is explained). Writes
    faithfulness.json (with the definitions) and faithfulness.png to --out.
    """
    settings = FaithfulnessSettings(parse_percentiles(percentiles), noise, noise_seed, steps, baseline, batch_size)
    session = CamSession(model, providers=list(providers) or None)
    images = read_images(data, session.labels, count, seed, session.input_size[0])
    chosen = list(methods) or list(METHODS)
    with click.progressbar(length=len(images.images) * len(chosen), label="perturbing", file=sys.stderr) as bar:
        metrics = evaluate_faithfulness(session, images, chosen, settings, progress=bar.update)
    metrics = {"model": str(session.path), "data": data, **metrics}
    written = write_faithfulness_report(metrics, Path(out_dir), f"{Path(str(session.path)).name} on {data}")
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    click.echo(f"{metrics['images']} images, the {metrics['explained']} explained")
    click.echo("\n".join(summary_lines(metrics)))
    click.echo("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()

"""Faithfulness at 224 pixels: a backbone model's table, and what each metric costs.

    .venv/bin/python benchmarks/faithfulness_bench.py table [docs/localization.md]
    .venv/bin/python benchmarks/faithfulness_bench.py cost [docs/benchmarks.md]

The backbone model is ResNet-18-GAP at 224x224 RGB (`train.models.GapCam`: torchvision's resnet18
up to layer4, a 3x3 CAM conv of K=512 filters, 7x7 maps, 5 classes), with random weights (seed 0),
exported by `export.export_model` into a temporary folder. Random, because on 2 CPU cores a few
minutes of `python -m train fit shapes --backbone resnet18 --size 224 --cam-channels 512` (2 epochs
of 1500 images, or 3 of 800, from scratch: torchvision's ImageNet weights were not cached) left
it at chance (validation accuracy 0.16 to 0.24 of 5 classes).

`table`: `evaluate_faithfulness` (what `python -m runtime faithfulness MODEL shapes` runs) of every
method in `runtime.maps.methods` on TABLE_IMAGES held-out shapes images at 224 (test split, seed
0), with the default settings; its Markdown replaces the table's section of the given file.

`cost`: images per second of each metric, the maps given (the `cam` method's, made beforehand), on
the bundled demo model (`shapes`, small_cnn at 64x64) and on ResNet-18-GAP: ROAD (18 noisy linear
imputations, then the model), its imputation alone, Average Drop and Increase, deletion and
insertion, and all of them (`perturbation_scores`, what `runtime faithfulness` runs per method);
against pytorch-grad-cam's `ROADCombined` (the same 9 percentiles, both orders, its sparse direct
solve) on the torch model, given the same inputs and maps. The demo package holds no torch
weights, so pytorch-grad-cam runs a random-weight torch GapCam of the demo's architecture: its cost
depends on the architecture and the maps (which pixels are imputed), not on the weights. Then
whole `gapcam run` processes on folders of PNGs, without and with `--deletion-curves`. The
Markdown replaces the benchmark's section of the given file.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from runtime_bench import Logits, median_seconds  # the same timing and logits-only wrapper as make bench

from export import export_model
from export.int8 import cpu_name
from runtime import CamSession, ModelInfo
from runtime.evaluation.datasets import read_images
from runtime.evaluation.faithfulness import (
    PERCENTILES,
    FaithfulnessSettings,
    deletion_curves,
    evaluate_faithfulness,
    explained_maps,
    perturbation_scores,
    road_inputs,
    step_counts,
)
from runtime.evaluation.perturbation import removal_masks
from runtime.evaluation.shapes import CLASSES, render_split
from runtime.inference.providers import installed_versions
from runtime.inputs.image import Preprocess
from runtime.maps.forward import batched_logits
from runtime.maps.methods import METHODS
from train.models import Architecture, GapCam
from train.recipes import SHAPES

THREADS = 2  # torch's threads; onnxruntime uses its default, the machine's cores
SIZE = 224
RESNET18 = Architecture(backbone="resnet18", in_channels=3, num_classes=len(CLASSES), cam_channels=512)
RESNET18_INPUT = Preprocess(height=SIZE, width=SIZE, color="RGB", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
TABLE_IMAGES = 20  # at 224 every method costs seconds per image on 2 cores (Score-CAM's maps: K = 512 inference inputs)
COST_IMAGES = {"demo": 32, "resnet18": 8}
FOLDER_IMAGES = {"demo": 256, "resnet18": 16}  # the folder runs' PNGs
TABLE_SECTION = ("<!-- faithfulness_bench table: begin -->", "<!-- faithfulness_bench table: end -->")
COST_SECTION = ("<!-- faithfulness_bench cost: begin -->", "<!-- faithfulness_bench cost: end -->")


def random_model(architecture: Architecture) -> GapCam:
    torch.manual_seed(0)
    return GapCam(architecture).eval()


def export_resnet18(model: GapCam, folder: Path) -> CamSession:
    """ResNet-18-GAP exported (checker, torch parity) and opened on the CPU."""
    info = ModelInfo(
        labels=list(CLASSES),
        preprocess=RESNET18_INPUT,
        fc_weight=model.fc.weight.detach().numpy(),
        fc_bias=model.fc.bias.detach().numpy(),
        architecture=RESNET18.to_dict(),
    )
    return CamSession(export_model(model, info, folder / "resnet18-gap-224.onnx").path, providers=["CPUExecutionProvider"])


def versions() -> str:
    return ", ".join(installed_versions(("numpy", "onnxruntime", "torch", "grad-cam")))


def replace_section(target: Path, section: tuple[str, str], lines: list[str]) -> None:
    """Print the section and put it between its markers in `target` (appended where they are missing)."""
    begin, end = section
    text = "\n".join([begin, *lines, end])
    print(text)
    current = target.read_text(encoding="utf-8")
    if begin in current and end in current:
        current = current[: current.index(begin)] + text + current[current.index(end) + len(end) :]
    else:
        current = current.rstrip("\n") + "\n\n" + text + "\n"
    target.write_text(current, encoding="utf-8")
    print(f"wrote {target}")


def table_lines(metrics: dict[str, Any]) -> list[str]:
    """The Markdown table of docs/localization.md's demo table, from `evaluate_faithfulness`'s metrics."""
    shown = [PERCENTILES.index(p) for p in (10, 50, 90)]
    lines = [
        "| method | ROAD-combined | MoRF 10 / 50 / 90 | LeRF 10 / 50 / 90 | Average Drop | Average Increase | deletion AUC "
        "| insertion AUC | pointing game | seconds (maps + metrics) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, values in metrics["methods"].items():
        morf, lerf = (" / ".join(f"{values[key]['mean'][i]:.3f}" for i in shown) for key in ("road_morf", "road_lerf"))
        spread = {
            key: f"{values[key]['mean']:.3f} ± {values[key]['std']:.3f}"
            for key in ("road_combined", "average_drop", "deletion_auc", "insertion_auc")
        }
        lines.append(
            f"| `{name}` | {spread['road_combined']} | {morf} | {lerf} | {spread['average_drop']} | "
            f"{values['average_increase']['mean']:.3f} | {spread['deletion_auc']} | {spread['insertion_auc']} | "
            f"{values['pointing_game']:.3f} | {values['seconds']['maps']:.1f} + {values['seconds']['metrics']:.1f} |"
        )
    return lines


def table(target: Path | None) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        session = export_resnet18(random_model(RESNET18), Path(tmp))
        data = read_images("shapes", session.labels, TABLE_IMAGES, 0, SIZE)
        metrics = evaluate_faithfulness(session, data, list(METHODS))
    probability = next(iter(metrics["methods"].values()))["probability"]
    lines = [
        "### A backbone model at 224: ResNet-18-GAP, random weights",
        "",
        f"`.venv/bin/python benchmarks/faithfulness_bench.py table docs/localization.md` ({date.today().isoformat()}, "
        f"{time.perf_counter() - started:.0f} s on {os.cpu_count()} shared CPU cores): ResNet-18-GAP at 224x224 RGB built by "
        "`train.models.GapCam` (torchvision's resnet18 up to layer4, a CAM conv of K=512, 7x7 maps, 5 classes, ImageNet's "
        "mean and std) with **random weights** (seed 0), exported by `export.export_model`; "
        f"{metrics['images']} held-out shapes images rendered at 224 (test split, seed 0), the true class explained, "
        "the default settings as above. A few minutes of training from scratch on 2 CPU cores left this model at chance "
        "(torchvision's ImageNet weights were not cached), so its weights are random. "
        f"The class's probability on the unperturbed images is {probability['mean']:.3f} ± {probability['std']:.3f}.",
        "",
        *table_lines(metrics),
    ]
    if target is not None:
        replace_section(target, TABLE_SECTION, lines)
    else:
        print("\n".join(lines))


def median_rate(fn: Callable[[], object], images: int, repeats: int) -> float:
    """Images per second: `images` over the median of `repeats` timed calls, after a warm-up call."""
    return images / median_seconds(fn, repeats)


def cost_rows(name: str, session: CamSession, torch_model: GapCam, images: Sequence[np.ndarray], repeats: int) -> list[str]:
    """One model's rows: each metric's images per second in gapcam, and pytorch-grad-cam's ROAD."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    settings = FaithfulnessSettings()
    results = session.run(list(images), method="cam")
    maps, inputs = explained_maps(results, session.input_size), session.to_batch(list(images))
    classes = np.array([result.classes[0] for result in results], dtype=np.int64)
    pairs = list(zip(inputs, maps, strict=True))
    road_count, curve_count = 2 * len(PERCENTILES), 2 * (len(step_counts(maps[0].size, settings.steps)) - 1)

    def road() -> object:
        return batched_logits(session.logits, (road_inputs(x, m, settings, i) for i, (x, m) in enumerate(pairs)), settings.batch_size)

    def imputation() -> None:
        for i, (x, m) in enumerate(pairs):
            road_inputs(x, m, settings, i)

    def confidence() -> object:
        return batched_logits(session.logits, iter([inputs, (inputs * maps[:, None]).astype(np.float32)]), settings.batch_size)

    work = [
        ("ROAD (MoRF and LeRF at 10..90%)", road_count, road),
        ("ROAD's imputation alone", 0, imputation),
        ("Average Drop and Increase", 2, confidence),
        ("deletion and insertion AUC", curve_count, lambda: deletion_curves(session.logits, inputs, maps, classes, settings)),
        (
            "all of them (`runtime faithfulness`)",
            road_count + 1 + curve_count,
            lambda: perturbation_scores(session.logits, inputs, maps, classes, settings, range(len(pairs))),
        ),
    ]
    ours = {label: median_rate(fn, len(pairs), repeats) for label, _, fn in work}
    metric, imputer = ROADCombined(percentiles=list(PERCENTILES)), NoisyLinearImputer()
    x, targets = torch.from_numpy(inputs), [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    removed = [np.concatenate([removal_masks(m, PERCENTILES, True), removal_masks(m, PERCENTILES, False)]) for m in maps]
    kept = [torch.from_numpy(~masks).float() for masks in removed]  # [2P, H, W] per image: 1 where a pixel is kept

    def their_imputation() -> None:  # pytorch-grad-cam's imputer (a sparse direct solve per mask) on gapcam's masks
        for image, masks in zip(x, kept, strict=True):
            for mask in masks:
                imputer(image, mask)

    theirs = {
        work[0][0]: median_rate(lambda: metric(x, maps, targets, Logits(torch_model)), len(pairs), repeats),
        work[1][0]: median_rate(their_imputation, len(pairs), repeats),
    }
    rows = []
    for label, count, _ in work:
        peer = f"{theirs[label]:.2f} | {ours[label] / theirs[label]:.1f}x" if label in theirs else "- | -"
        rows.append(f"| {name} | {label} | {count} | {ours[label]:.2f} | {peer} |")
    return rows


def folder_rows(name: str, model: str, images: Sequence[np.ndarray], folder: Path) -> list[str]:
    """Whole `gapcam run` processes (`python -m runtime predict`) on the images as PNGs, without and
    with --deletion-curves: images per second, start-up included."""
    source = folder / "images"
    source.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(source / f"{i:04d}.png")
    rows = []
    for label, flags, count in (
        ("`gapcam run`, whole process", [], 1),
        ("`gapcam run --deletion-curves`, whole process", ["--deletion-curves"], 41),
    ):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "runtime", model, str(source), "--out", str(folder / "out"), *flags], check=True, capture_output=True
        )
        rows.append(f"| {name} | {label} ({len(images)} PNGs) | {count} | {len(images) / (time.perf_counter() - start):.2f} | - | - |")
    return rows


def cost(target: Path | None) -> None:
    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    lines = [
        f"## Faithfulness metrics: images per second (`benchmarks/faithfulness_bench.py cost`, {date.today().isoformat()})",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores (shared); Python {platform.python_version()}; {versions()}; "
        f"onnxruntime on its CPU provider, torch with {THREADS} threads. Command: "
        "`.venv/bin/python benchmarks/faithfulness_bench.py cost docs/benchmarks.md`. Held-out shapes images "
        f"({COST_IMAGES['demo']} at 64 for the demo model, {COST_IMAGES['resnet18']} at 224 for ResNet-18-GAP), each metric "
        "given the `cam` maps, default settings (ROAD's 9 percentiles in both orders, 20 deletion and insertion steps); "
        "medians of timed calls after a warm-up (3 for the demo, 1 for ResNet-18-GAP). gapcam runs the ONNX model; "
        "pytorch-grad-cam's `ROADCombined` the torch model (the demo's: a random-weight twin of its architecture, since "
        "its package holds no torch weights; ResNet-18-GAP's: the same random weights) on the same inputs and maps, and "
        "its `NoisyLinearImputer` (a sparse direct solve) alone on gapcam's masks. Last, whole `gapcam run` processes "
        f"(`python -m runtime MODEL FOLDER`, start-up included) on {FOLDER_IMAGES['demo']} and {FOLDER_IMAGES['resnet18']} "
        "PNGs, without and with `--deletion-curves` (the report's per-image curves).",
        "",
        "| model | metric | inference inputs per image | gapcam images/s | pytorch-grad-cam images/s | gapcam / pytorch-grad-cam |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    demo = CamSession("shapes", providers=["CPUExecutionProvider"])
    lines += cost_rows(
        "demo `shapes` (64x64)", demo, random_model(SHAPES.architecture), list(render_split(COST_IMAGES["demo"], 0, "test", 64).images), 3
    )
    with tempfile.TemporaryDirectory() as tmp:
        model = random_model(RESNET18)
        session = export_resnet18(model, Path(tmp))
        lines += cost_rows(
            "ResNet-18-GAP (224x224)", session, model, list(render_split(COST_IMAGES["resnet18"], 0, "test", SIZE).images), 1
        )
        runs = [("demo `shapes` (64x64)", "shapes", 64, "demo"), ("ResNet-18-GAP (224x224)", str(session.path), SIZE, "resnet18")]
        for name, path, size, key in runs:
            lines += folder_rows(name, path, list(render_split(FOLDER_IMAGES[key], 1, "test", size).images), Path(tmp) / key)
    lines += ["", f"The whole benchmark took {time.perf_counter() - started:.0f} s."]
    if target is not None:
        replace_section(target, COST_SECTION, lines)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("table", "cost"):
        sys.exit(__doc__)
    {"table": table, "cost": cost}[sys.argv[1]](Path(sys.argv[2]) if len(sys.argv) > 2 else None)

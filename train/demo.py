"""`python -m train.demo MODEL.onnx --out demo`: CamSession on held-out shapes, scored against the truth.

Classification accuracy, localization accuracy as the CAM paper counts it (right class and
IoU(CAM box, true box) >= 0.5) and the other measures of runtime.localization, plus a grid image,
results.json, and the sample images and metrics that `make bundle` packs.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
from PIL import Image, ImageDraw

from runtime.cam import box_iou
from runtime.cli import cli_errors
from runtime.files import atomic_path, write_text_atomic
from runtime.session import CamSession
from runtime.localization import evaluate_localization, shapes_ground_truth

TRUE_COLOR, CAM_COLOR = (0, 255, 0), (255, 255, 255)
SAMPLE_IMAGES = 8  # held-out images saved as PNG for packaging


def grid_image(session: CamSession, images, results, boxes, columns: int = 4, scale: int = 3) -> Image.Image:
    """Pairs of tiles per sample: the input, then the CAM overlay with the true box (green) and CAM box (white)."""
    height, width = images[0].shape[:2]
    tile_w, tile_h = width * scale, height * scale
    rows = -(-len(images) // columns)
    canvas = Image.new("RGB", (columns * 2 * tile_w, rows * tile_h), (0, 0, 0))
    for i, (pixels, result, truth) in enumerate(zip(images, results, boxes)):
        big = Image.fromarray(pixels).resize((tile_w, tile_h), Image.Resampling.NEAREST)
        box = [v * scale for v in result.box]
        shown = session.overlay(big, result.cam, box=box, label=f"{result.label} {result.prob:.2f}", box_color=CAM_COLOR)
        x0, y0, x1, y1 = (v * scale for v in truth)
        ImageDraw.Draw(shown).rectangle((x0, y0, x1 - 1, y1 - 1), outline=TRUE_COLOR, width=2)
        left, top = (i % columns) * 2 * tile_w, (i // columns) * tile_h
        canvas.paste(big, (left, top))
        canvas.paste(shown, (left + tile_w, top))
    return canvas


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="demo", show_default=True)
@click.option("--count", default=300, show_default=True, help="Held-out images to score.")
@click.option("--seed", default=0, show_default=True, help="Seed of the held-out (test) split.")
@cli_errors
def main(model: str, out_dir: str, count: int, seed: int) -> None:
    """Score MODEL on held-out shapes images and draw a grid of CAMs and boxes."""
    started = time.time()
    session = CamSession(model)
    truth = shapes_ground_truth(count, seed, session.input_size[0])
    tick = time.time()
    results = session.run(truth.images)
    seconds = time.time() - tick
    records = []
    for i, result in enumerate(results):
        records.append({
            "index": i,
            "true_label": session.labels[truth.labels[i]],
            "true_box": truth.boxes[i][0].tolist(),
            **result.to_dict(),
            "iou": box_iou(result.box, truth.boxes[i][0]),
            "correct": result.label == session.labels[truth.labels[i]],
        })
    localization = evaluate_localization(session, truth)
    parity = session.info.parity
    summary = {
        "model": model,
        "images": count,
        "classification_accuracy": localization["classification_accuracy"],
        "localization_accuracy": localization["top1_localization_accuracy"],
        "gt_known_localization_accuracy": localization["gt_known_localization_accuracy"],
        "max_box_accuracy": localization["max_box_accuracy"]["0.5"]["value"],
        "pxap": localization["pxap"],
        "mean_iou": float(np.mean([r["iou"] for r in records])),
        "box_threshold": session.box_threshold,
        "inference_seconds": seconds,
        "providers": session.providers,
        "export_parity": {name: parity[name]["relative"] for name in ("logits", "features", "cams")},
    }
    out = Path(out_dir)
    with atomic_path(out / "grid.png") as tmp:
        grid_image(session, truth.images[:16], results[:16], [boxes[0] for boxes in truth.boxes[:16]]).save(tmp, format="PNG")
    write_text_atomic(out / "results.json", json.dumps({"summary": summary, "results": records}, indent=2))
    # Inputs for `zoo pack --images` and the measured figures for its --metrics (see `make bundle`).
    for i, pixels in enumerate(truth.images[:SAMPLE_IMAGES]):
        with atomic_path(out / "images" / f"{i:02d}.png") as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")
    keys = ("classification_accuracy", "localization_accuracy", "gt_known_localization_accuracy", "max_box_accuracy", "pxap")
    measured = {f"heldout_{key}": summary[key] for key in keys}
    write_text_atomic(out / "metrics.json", json.dumps({**measured, "heldout_images": count}, indent=2))
    click.echo(f"held-out shapes images: {count} (seed {seed}), providers {', '.join(session.providers)}")
    click.echo(f"classification accuracy:          {summary['classification_accuracy']:.3f}")
    click.echo(f"localization accuracy (IoU>=0.5): {summary['localization_accuracy']:.3f}   (class right and box IoU >= 0.5)")
    click.echo(f"GT-known localization accuracy:   {summary['gt_known_localization_accuracy']:.3f}   "
               f"MaxBoxAcc {summary['max_box_accuracy']:.3f}, PxAP {summary['pxap']:.3f}, mean IoU {summary['mean_iou']:.3f}")
    click.echo("export parity (relative): " + ", ".join(f"{k} {v:.1e}" for k, v in summary["export_parity"].items()))
    click.echo(f"inference: {count} images in {seconds:.2f}s ({count / seconds:.0f} images/s, one batch); total {time.time() - started:.1f}s")
    click.echo(f"wrote {out / 'grid.png'}, {out / 'results.json'}, {out / 'metrics.json'} and {out / 'images'}/")


if __name__ == "__main__":
    main()

"""`make demo`'s figures, after `python -m runtime eval MODEL shapes --out demo/localization`.

Writes what the CLIs do not: demo/grid.png (held-out shapes with the true box in green and the
CAM box in white), demo/images/*.png (held-out inputs for the folder run and `zoo pack --images`)
and demo/metrics.json (the eval's headline figures, flat, for `zoo pack --metrics`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

from runtime import CamSession
from runtime.evaluation.datasets import shapes_ground_truth

TRUE_COLOR, CAM_COLOR = (0, 255, 0), (255, 255, 255)
GRID_IMAGES, SAMPLE_IMAGES, SCALE, COLUMNS = 16, 8, 3, 4


def grid_image(session: CamSession, images, true_boxes) -> Image.Image:
    """Pairs of tiles: the input, then the CAM overlay with the true box (green) and the CAM box (white)."""
    height, width = images[0].shape[:2]
    tile_w, tile_h = width * SCALE, height * SCALE
    canvas = Image.new("RGB", (COLUMNS * 2 * tile_w, -(-len(images) // COLUMNS) * tile_h))
    for i, (result, pixels, truth) in enumerate(zip(session.run(list(images)), images, true_boxes, strict=True)):
        big = Image.fromarray(pixels).resize((tile_w, tile_h), Image.Resampling.NEAREST)
        box = [v * SCALE for v in result.box]
        shown = session.overlay(big, result.cams_scaled[0], box=box, label=f"{result.label} {result.prob:.2f}", box_color=CAM_COLOR)
        x0, y0, x1, y1 = (v * SCALE for v in truth)
        ImageDraw.Draw(shown).rectangle((x0, y0, x1 - 1, y1 - 1), outline=TRUE_COLOR, width=2)
        left, top = (i % COLUMNS) * 2 * tile_w, (i // COLUMNS) * tile_h
        canvas.paste(big, (left, top))
        canvas.paste(shown, (left + tile_w, top))
    return canvas


def headline(metrics: dict) -> dict:
    """The eval's figures that a package manifest records, flat."""
    return {
        "heldout_images": metrics["images"],
        "heldout_classification_accuracy": metrics["classification_accuracy"],
        "heldout_localization_accuracy": metrics["top1_localization_accuracy"],
        "heldout_gt_known_localization_accuracy": metrics["gt_known_localization_accuracy"],
        "heldout_max_box_accuracy": metrics["max_box_accuracy"]["0.5"]["value"],
        "heldout_max_box_accuracy_v2": metrics["mean_max_box_accuracy_v2"],
        "heldout_pxap": metrics["pxap"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--localization", default="demo/localization/localization.json")
    parser.add_argument("--out", default="demo")
    args = parser.parse_args()
    out, session = Path(args.out), CamSession(args.model)
    metrics = json.loads(Path(args.localization).read_text())
    truth = shapes_ground_truth(GRID_IMAGES, 0, session.input_size[0])  # the first images `eval shapes` scored
    grid_image(session, truth.images, [boxes[0] for boxes in truth.boxes]).save(out / "grid.png")
    (out / "images").mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(truth.images[:SAMPLE_IMAGES]):
        Image.fromarray(pixels).save(out / "images" / f"{i:02d}.png")
    (out / "metrics.json").write_text(json.dumps(headline(metrics), indent=2))
    print(f"wrote {out / 'grid.png'}, {out / 'images'}/ ({SAMPLE_IMAGES} held-out images) and {out / 'metrics.json'}")


if __name__ == "__main__":
    main()

"""`python -m runtime MODEL IMAGE... --out DIR`: labels, boxes and CAM overlays for images."""
from __future__ import annotations

import json
from pathlib import Path

import click

from runtime.cli import cli_errors
from runtime.files import atomic_path, write_text_atomic
from runtime.overlay import COLORMAPS
from runtime.session import CamSession


def overlay_names(images: list[str]) -> list[str]:
    """One PNG name per image, from its file name; repeated names get their position as a prefix."""
    stems = [Path(image).stem for image in images]
    return [f"{stem}.png" if stems.count(stem) == 1 else f"{i:04d}_{stem}.png" for i, stem in enumerate(stems)]


@click.command()
@click.argument("model")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="cam_out", show_default=True, help="Folder for overlays and results.json.")
@click.option("--topk", default=1, show_default=True, help="Explain the k most probable classes.")
@click.option("--threshold", type=click.FloatRange(0, 1), help="CAM box threshold, as a share of the CAM's max [default: the model's].")
@click.option("--colormap", type=click.Choice(sorted(COLORMAPS)), default="jet", show_default=True)
@click.option("--alpha", default=0.5, show_default=True, help="Heatmap opacity in the overlay.")
@click.option("--provider", "providers", multiple=True, help="onnxruntime provider(s); default CUDA when it works, else CPU.")
@cli_errors
def main(model, images, out_dir, topk, threshold, colormap, alpha, providers):
    """Classify IMAGES with MODEL (an exported .onnx file) and draw where it looked."""
    session = CamSession(model, providers=list(providers) or None, box_threshold=threshold)
    results = session.run(list(images), topk=topk)
    out = Path(out_dir)
    records = []
    click.echo(f"{'file':<40} {'label':<16} {'prob':>6}  box (x0, y0, x1, y1)")
    for image, name, result in zip(images, overlay_names(list(images)), results):
        picture = session.overlay(image, result.cam, alpha=alpha, colormap=colormap, box=result.box, label=result.label)
        with atomic_path(out / name) as tmp:
            picture.save(tmp, format="PNG")
        records.append({"file": str(image), "overlay": name, **result.to_dict()})
        click.echo(f"{str(image):<40} {result.label:<16} {result.prob:>6.3f}  {result.box}")
    summary = {"model": str(session.path), "providers": session.providers, "labels": session.labels, "results": records}
    write_text_atomic(out / "results.json", json.dumps(summary, indent=2))
    click.echo(f"wrote {len(records)} overlays and results.json to {out}")


if __name__ == "__main__":
    main()

"""Reports: the all-classes explanation figure, and a folder run's self-contained HTML report and
results files, written as the run goes so that memory does not grow with the folder."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from runtime.faces.session import Face
from runtime.formats.files import atomic_path
from runtime.inference.session import CamSession
from runtime.inputs.image import ImageInput, load_image, to_color
from runtime.maps.results import CamResult

TILE = 224  # longest side of each tile in the explanation figure
THUMB = 256  # longest side of images embedded in the HTML report
CURVE_CHART = (400, 130)  # the deletion curves' inline SVG (width, height): as wide as a card's two thumbnails


def _fit(image: Image.Image, side: int) -> Image.Image:
    scale = side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR)


def explain_figure(session: CamSession, image: ImageInput, result: CamResult, colormap: str = "jet", alpha: float = 0.5) -> Image.Image:
    """The input, then one tile per explained class: its CAM over the image, its label and probability.

    As in the CAM paper's figures, tiles of competing classes side by side show why the model
    chose one class over another (say surprise rather than fear).
    """
    picture = to_color(load_image(image), "RGB")
    tiles = [("input", _fit(picture, TILE))]
    for c, label, cam, box in zip(result.classes, result.labels, result.cams_scaled, result.boxes, strict=True):
        shown = session.overlay(picture, cam, colormap=colormap, alpha=alpha, box=box)
        mark = " (predicted)" if c in result.positives else ""
        tiles.append((f"{label} {result.probs[c]:.3f}{mark}", _fit(shown, TILE)))
    caption = 18
    width = sum(tile.width for _, tile in tiles) + 8 * (len(tiles) + 1)
    height = max(tile.height for _, tile in tiles) + caption + 16
    figure = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(figure)
    x = 8
    for text, tile in tiles:
        figure.paste(tile, (x, 8 + caption))
        draw.text((x, 6), text, fill="black")
        x += tile.width + 8
    return figure


def jpeg_data_uri(image: Image.Image) -> str:
    """A thumbnail as a data URI; JPEG, since PNG encoding took most of a folder run's time."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def report_card(
    name: str,
    picture: Image.Image,
    overlay: Image.Image,
    result: CamResult,
    curves: Mapping[str, Any] | None = None,
    multilabel: bool = False,
) -> str:
    """One image's card in the HTML report: input and overlay thumbnails (embedded, so the file
    stands alone), the explained classes with their probabilities, and the box; with `curves`
    (`Curves.image`'s), the first class's deletion and insertion curves below. A multi-label model's
    card names the findings it sees present and gives each explained class's box."""
    items = [f"{html.escape(label)} <b>{result.probs[c]:.3f}</b>" for c, label in zip(result.classes, result.labels, strict=True)]
    caption = f"box {[int(v) for v in result.box]}"
    if multilabel:
        found = ", ".join(html.escape(label) for label in result.positive_labels) or "none above its threshold"
        items = [f"{item} box {[int(v) for v in box]}" for item, box in zip(items, result.boxes, strict=True)]
        caption = f"findings (multi-label): {found}"
    chart = "" if curves is None else curve_chart(curves)
    return _card(name, picture, overlay, items, caption, chart)


def curve_chart(curves: Mapping[str, Any], size: tuple[int, int] = CURVE_CHART) -> str:
    """Inline SVG of one image's deletion (red) and insertion (blue) curves: probability against the
    share of pixels changed, both axes 0 to 1, with their areas. Each line carries its numbers in
    `data-values` (and the chart the shares in `data-fractions`), six decimals, for scripts and tests."""
    width, height = size
    left, right, top, bottom = 28, 8, 8, 34

    def points(values: Sequence[float]) -> str:
        return " ".join(
            f"{left + x * (width - left - right):.1f},{top + (1 - y) * (height - top - bottom):.1f}"
            for x, y in zip(curves["fractions"], values, strict=True)
        )

    def numbers(values: Sequence[float]) -> str:
        return ",".join(f"{value:.6f}" for value in values)

    lines = "".join(
        f'<polyline class="{kind}" fill="none" stroke="{color}" stroke-width="2" points="{points(curves[kind])}" '
        f'data-values="{numbers(curves[kind])}"/>'
        for kind, color in (("deletion", "#d62728"), ("insertion", "#1f77b4"))
    )
    base = height - bottom
    return (
        f'<svg class="curves" viewBox="0 0 {width} {height}" width="100%" role="img" data-fractions="{numbers(curves["fractions"])}">'
        "<title>deletion and insertion curves of the first class</title>"
        f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{base - top}" fill="none" stroke="#999"/>'
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" font-size="10">1</text>'
        f'<text x="{left - 4}" y="{base}" text-anchor="end" font-size="10">0</text>{lines}'
        f'<text x="{left}" y="{base + 12}" font-size="10">share of pixels changed, most relevant first: 0 to 1</text>'
        f'<text x="{left}" y="{base + 25}" font-size="10"><tspan fill="#d62728">deletion AUC {curves["deletion_auc"]:.3f}</tspan> '
        f'(lower is better), <tspan fill="#1f77b4">insertion AUC {curves["insertion_auc"]:.3f}</tspan> (higher)</text></svg>'
    )


def face_report_card(name: str, picture: Image.Image, overlay: Image.Image, faces: Sequence[Face]) -> str:
    """A photo's card when its faces were explained: one line per face (label, probability, face box)."""
    items = [f"{html.escape(face.label)} <b>{face.prob:.3f}</b> at {list(face.face_box)}" for face in faces]
    return _card(name, picture, overlay, items, f"{len(faces)} face{'' if len(faces) == 1 else 's'}")


def _card(name: str, picture: Image.Image, overlay: Image.Image, items: Sequence[str], caption: str, chart: str = "") -> str:
    lines = "".join(f"<li>{item}</li>" for item in items)
    image, shown = jpeg_data_uri(_fit(to_color(picture, "RGB"), THUMB)), jpeg_data_uri(_fit(overlay, THUMB))
    return (
        f'<figure><div class="pair"><img src="{image}" alt="input"><img src="{shown}" alt="CAM"></div>'
        f"<figcaption><code>{html.escape(name)}</code><ol>{lines}</ol>{caption}{chart}</figcaption></figure>\n"
    )


class HtmlReport:
    """report.html, a single file with no server and no network (images are data URIs), written as a
    run goes: cards are appended to a temporary file beside it, so memory does not grow with the
    folder, and `finish` writes the page around them in one rename. On load the page records in
    <body data-images-loaded/-total> how many images decoded, for automated checks."""

    def __init__(self, path: str | os.PathLike[str], title: str):
        self.path, self.title, self.count = Path(path), title, 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cards = tempfile.TemporaryFile(mode="w+", encoding="utf-8", dir=self.path.parent)

    def add(self, card: str) -> None:
        self._cards.write(card)
        self.count += 1

    def finish(self, skipped: Sequence[tuple[str, str]]) -> None:
        skipped_html = "".join(f"<li><code>{html.escape(name)}</code>: {html.escape(reason)}</li>" for name, reason in skipped)
        with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as page:
            page.write(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1em; }}
figure {{ margin: 0; padding: .6em; background: white; border: 1px solid #ddd; border-radius: 6px; }}
.pair {{ display: flex; gap: .4em; }} .pair img {{ width: 50%; image-rendering: auto; }}
figcaption ol {{ margin: .3em 0; padding-left: 1.4em; }}
</style></head>
<body data-images-loaded="0" data-images-total="{2 * self.count}">
<h1>{html.escape(self.title)}</h1>
<p>{self.count} images explained{f", {len(skipped)} skipped" if skipped else ""}. Left: input; right: the CAM of the first
listed class, with its box.</p>
<div class="grid">
""")
            self._cards.seek(0)
            shutil.copyfileobj(self._cards, page)
            page.write(f"""</div>
{f"<h2>Skipped</h2><ul>{skipped_html}</ul>" if skipped else ""}
<script>
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  document.body.dataset.imagesLoaded = images.filter((img) => img.complete && img.naturalWidth > 0).length;
}});
</script>
</body></html>
""")
        self._cards.close()


class ResultLog:
    """results.jsonl (one JSON record per image) and results.json (the run's summary with every
    record), written as a run goes: records are appended to a temporary file beside them, and
    `finish` writes both files from it, each in one rename."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder, self.count = Path(folder), 0
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lines = tempfile.TemporaryFile(mode="w+", encoding="utf-8", dir=self.folder)

    def add(self, record: Mapping[str, Any]) -> None:
        self._lines.write(json.dumps(record) + "\n")
        self.count += 1

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Write both files; `summary` holds the run's other fields (its "results" are the records)."""
        self._lines.seek(0)
        with atomic_path(self.folder / "results.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as out:
            shutil.copyfileobj(self._lines, out)
        self._lines.seek(0)
        head = json.dumps({**summary, "results": []}, indent=2)
        before, after = head.split('"results": []', 1)
        with atomic_path(self.folder / "results.json") as tmp, open(tmp, "w", encoding="utf-8") as out:
            out.write(before + '"results": [')
            for number, line in enumerate(self._lines):
                out.write(("," if number else "") + "\n    " + line.rstrip("\n"))
            out.write("\n  ]" + after)
        self._lines.close()

"""A small line chart drawn with Pillow, so the runtime can plot without matplotlib."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def line_chart(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (720, 440),
    x_range: tuple[float, float] = (0.0, 1.0),
    y_range: tuple[float, float] = (0.0, 1.0),
) -> Image.Image:
    """Lines of (xs, ys) on fixed axes with ticks every tenth, a legend and a title."""
    width, height = size
    left, right, top, bottom = 64, 20, 36, 52
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    (x0, x1), (y0, y1) = x_range, y_range

    def point(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return px, py

    for i in range(11):
        fx, fy = x0 + (x1 - x0) * i / 10, y0 + (y1 - y0) * i / 10
        gx, _ = point(fx, y0)
        _, gy = point(x0, fy)
        draw.line([(gx, top), (gx, height - bottom)], fill=(230, 230, 230))
        draw.line([(left, gy), (width - right, gy)], fill=(230, 230, 230))
        draw.text((gx - 8, height - bottom + 6), f"{fx:.1f}", fill="black")
        draw.text((left - 30, gy - 6), f"{fy:.1f}", fill="black")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    draw.text(((width - draw.textlength(xlabel)) / 2, height - 22), xlabel, fill="black")
    draw.text((4, top - 16), ylabel, fill="black")
    draw.text(((width - draw.textlength(title)) / 2, 4), title, fill="black")
    for index, (name, (xs, ys)) in enumerate(series.items()):
        color = COLORS[index % len(COLORS)]
        points = [point(x, y) for x, y in zip(xs, ys, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        legend_y = top + 8 + 16 * index
        draw.line([(width - right - 150, legend_y + 6), (width - right - 125, legend_y + 6)], fill=color, width=3)
        draw.text((width - right - 118, legend_y), name, fill="black")
    return image

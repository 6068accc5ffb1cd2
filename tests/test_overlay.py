"""runtime.reports.overlay: heatmaps blended over images, colormaps, boxes and labels."""

import numpy as np

from runtime.reports.overlay import colorize, overlay


def test_overlay_colormaps_alpha_box_and_label():
    cam = np.tile(np.linspace(0, 1, 50, dtype=np.float32), (40, 1))
    assert tuple(colorize(np.array([[0.0]]))[0, 0]) == (0, 0, 128)  # jet starts dark blue
    assert tuple(colorize(np.array([[1.0]]), "gray")[0, 0]) == (255, 255, 255)
    gray = np.full((40, 50), 90, np.uint8)
    plain = np.asarray(overlay(gray, cam, alpha=0.0))
    assert (plain == 90).all()  # a grayscale image is shown in gray under the heatmap
    full = np.asarray(overlay(gray, cam, alpha=1.0, colormap="hot"))
    assert tuple(full[0, -1]) == (255, 255, 255)
    boxed = np.asarray(overlay(gray, cam, alpha=0.0, box=(10, 15, 30, 35), label="x", box_color=(255, 0, 0)))
    assert tuple(boxed[25, 10]) == (255, 0, 0) and tuple(boxed[25, 20]) == (90, 90, 90)  # edge drawn, inside untouched

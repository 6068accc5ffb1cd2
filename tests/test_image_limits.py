"""Decompression bombs and odd images: refused before decoding, as one-line errors; folder runs go on."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fixtures import bounded_python, write_png_bomb
from runtime import CamError, load_image
from runtime.inputs.image import Preprocess, preprocess

PEAK = 'print(next(int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")))'


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    return {
        "400mp": write_png_bomb(folder / "400mp.png", 20000, 20000),  # beyond Pillow's own error limit
        "120mp": write_png_bomb(folder / "120mp.png", 12000, 10000),  # between Pillow's warning and error limits
    }


def test_bombs_are_small_files_refused_before_decoding(bombs):
    assert bombs["400mp"].stat().st_size < 600_000
    with pytest.raises(CamError, match="400mp.png: refused as a decompression bomb"):
        load_image(bombs["400mp"])
    with pytest.raises(CamError, match=r"120mp.png: 12000x10000 is 120 megapixels, more than gapcam's limit of 100"):
        load_image(bombs["120mp"])


def test_refusing_a_bomb_costs_no_memory(bombs):
    """In a fresh process, refusing the 120-megapixel PNG (120 MB if decoded) leaves the peak where imports put it."""
    code = f"""
from runtime.inputs.image import load_image
{PEAK}
try:
    load_image({str(bombs["120mp"])!r})
except Exception:
    pass
{PEAK}
"""
    done = bounded_python(code, 1 << 30)
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split())
    assert after - before < 20, (before, after)


def test_the_limit_is_configurable(tmp_path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "a.png")
    monkeypatch.setenv("GAPCAM_MAX_IMAGE_PIXELS", "5000")
    with pytest.raises(CamError, match="more than gapcam's limit of 0.005"):
        load_image(tmp_path / "a.png")
    with pytest.raises(CamError, match="more than gapcam's limit"):
        load_image(np.zeros((100, 100), np.uint8))
    monkeypatch.setenv("GAPCAM_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(CamError, match="GAPCAM_MAX_IMAGE_PIXELS must be a whole number"):
        load_image(tmp_path / "a.png")


@pytest.mark.parametrize("mode", ["La", "RGBa", "LA", "PA", "I;16", "F", "CMYK", "1", "P"])
def test_every_pillow_mode_reaches_the_model(mode):
    for color in ("L", "RGB"):
        batch = preprocess(
            Image.new(mode, (10, 7)), Preprocess(8, 8, color, (0.5,) * (1 if color == "L" else 3), (0.5,) * (1 if color == "L" else 3))
        )
        assert batch.shape == (1, 1 if color == "L" else 3, 8, 8) and np.isfinite(batch).all()


def test_empty_and_truncated_images_are_one_line_errors(tmp_path):
    with pytest.raises(CamError, match=r"image array \[0, 5, 3\]: the image is empty"):
        load_image(np.zeros((0, 5, 3), np.uint8))
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:3000])
    lazy = Image.open(tmp_path / "cut.png")  # opened, not decoded: the damage shows only on load
    with pytest.raises(CamError, match="not a readable PIL image"):
        load_image(lazy)


def test_a_bomb_in_a_folder_run_is_skipped_and_the_run_finishes(tiny_onnx, bombs, shape_images, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, pixels in enumerate(shape_images.images[:3]):
        Image.fromarray(pixels).save(folder / f"{i}.png")
    (folder / "bomb.png").write_bytes(bombs["400mp"].read_bytes())
    done = subprocess.run(
        [sys.executable, "-m", "runtime", str(tiny_onnx), str(folder), "--out", str(tmp_path / "out")], capture_output=True, text=True
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(summary["results"]) == 3 and "decompression bomb" in summary["skipped"][0]["error"]
    assert (tmp_path / "out" / "report.html").is_file()
    named = subprocess.run(
        [sys.executable, "-m", "runtime", str(tiny_onnx), str(folder / "bomb.png"), "--out", str(tmp_path / "out2")],
        capture_output=True,
        text=True,
    )
    assert named.returncode == 1 and "Traceback" not in named.stderr and "decompression bomb" in named.stderr
    assert not (tmp_path / "out2").exists()

"""Folder runs, the HTML report (rendered in headless Chromium) and the explain figure."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from fixtures import chromium_binary, headless_chromium
from runtime.maps.methods import METHODS


def runtime_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "runtime", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, tiny_onnx, shape_images):
    root = tmp_path_factory.mktemp("folder_run")
    images = root / "images"
    (images / "nested").mkdir(parents=True)
    for i, pixels in enumerate(shape_images.images[:5]):
        Image.fromarray(pixels).save(images / f"s{i}.png")
    Image.fromarray(shape_images.images[5]).convert("L").save(images / "nested" / "gray.jpg")
    (images / "broken.jpg").write_bytes(b"not a jpeg at all")
    (images / "notes.txt").write_text("ignored: not an image suffix")
    done = runtime_cli(tiny_onnx, images, "--out", "out", "--batch-size", 4, "--topk", 2, cwd=root)
    return root, done


def test_folder_run_skips_bad_files_and_writes_everything(folder_run):
    root, done = folder_run
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stderr and "broken.jpg" in done.stderr
    lines = (root / "out" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 6
    records = [json.loads(line) for line in lines]
    assert all(len(r["explained"]) == 2 for r in records)
    assert all((root / "out" / r["overlay"]).is_file() for r in records)
    summary = json.loads((root / "out" / "results.json").read_text())
    assert summary["method"] == "cam" and summary["method_summary"] == METHODS["cam"].summary
    assert [s["file"].endswith("broken.jpg") for s in summary["skipped"]] == [True]
    html = (root / "out" / "report.html").read_text()
    assert html.count("<figure>") == 6 and "broken.jpg" in html and "http" not in html.replace("https://", "").split("<body")[0]


@pytest.mark.browser
def test_report_renders_in_headless_chromium_with_every_image(folder_run, tmp_path):
    root, _ = folder_run
    page = (root / "out" / "report.html").as_uri()
    command = headless_chromium(chromium_binary(), tmp_path / "profile", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom", page)
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    body = dom[dom.index("<body") : dom.index(">", dom.index("<body"))]
    assert 'data-images-total="12"' in body
    assert 'data-images-loaded="12"' in body, body


def test_explain_all_classes_figure(tiny_onnx, shape_images, tmp_path):
    Image.fromarray(shape_images.images[0]).save(tmp_path / "face.png")
    done = runtime_cli("explain", tiny_onnx, "face.png", "--all-classes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    probabilities = [float(line.split()[-1]) for line in done.stdout.splitlines() if not line.startswith("wrote")]
    assert len(probabilities) == 5 and sum(probabilities) == pytest.approx(1.0, abs=1e-3)
    figure = Image.open(tmp_path / "face_explain.png")
    assert figure.width > 6 * 224  # the input and five class tiles side by side

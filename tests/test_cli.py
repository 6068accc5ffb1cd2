"""The command lines end to end, and bad inputs: one clear line, non-zero exit, no partial output."""

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from PIL import Image


def gapcam(*args, cwd):
    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)


def one_line_error(result, expected):
    """Non-zero exit, no traceback, and one `Error:` line naming the culprit (click may add a usage hint)."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr


@pytest.fixture(scope="module")
def images(tmp_path_factory, shape_images):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, pixels in enumerate(shape_images.images[:3]):
        Image.fromarray(pixels).resize((96, 80)).save(folder / f"shape{i}.png")
        paths.append(folder / f"shape{i}.png")
    (folder / "notes.txt").write_text("this is not an image\n")
    return paths


@pytest.mark.slow  # trains and exports
def test_train_export_run_chain(tmp_path, images):
    trained = gapcam("train", "shapes", "--samples", 60, "--epochs", 1, "--cam-channels", 16, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "shapes.pt").exists() and (tmp_path / "shapes.last.pt").exists()
    exported = gapcam("export", "shapes.pt", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "argmax agrees: yes" in exported.stdout and "logits [batch, 5]" in exported.stdout
    ran = gapcam("runtime", "shapes.onnx", *images, "--out", "out", "--topk", 2, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert all(path.name in ran.stdout for path in images)
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["file"] for r in report["results"]] == [str(p) for p in images]
    for record in report["results"]:
        assert len(record["explained"]) == 2
        overlay = Image.open(tmp_path / "out" / record["overlay"])
        assert overlay.size == (96, 80)
        x0, y0, x1, y1 = record["explained"][0]["box"]
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 80


def test_runtime_rejects_a_text_file_without_writing(tmp_path, tiny_onnx, images):
    result = gapcam("runtime", tiny_onnx, images[0], images[0].parent / "notes.txt", "--out", tmp_path / "out", cwd=tmp_path)
    one_line_error(result, "notes.txt: not a readable image")
    assert not (tmp_path / "out").exists()


def test_runtime_rejects_an_onnx_file_without_metadata(tmp_path, tiny_onnx, images):
    model = onnx.load(tiny_onnx)
    del model.metadata_props[:]
    onnx.save(model, tmp_path / "plain.onnx")
    one_line_error(gapcam("runtime", "plain.onnx", images[0], "--out", "out", cwd=tmp_path), "plain.onnx: not a gapcam model")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # runs python -m export
def test_missing_files_are_named(tmp_path, tiny_onnx):
    one_line_error(gapcam("runtime", tiny_onnx, "absent.png", cwd=tmp_path), "absent.png")
    one_line_error(gapcam("export", "absent.pt", cwd=tmp_path), "absent.pt")
    one_line_error(gapcam("runtime", "absent.onnx", tiny_onnx, cwd=tmp_path), "absent.onnx: no such model file")


def test_export_rejects_truncated_checkpoint(tmp_path, tiny_checkpoint):
    (tmp_path / "cut.pt").write_bytes(tiny_checkpoint.read_bytes()[:3000])
    one_line_error(gapcam("export", "cut.pt", cwd=tmp_path), "cut.pt: not a readable gapcam checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.pt"]


@pytest.mark.slow  # runs python -m train
def test_train_rejects_bad_arguments(tmp_path):
    one_line_error(gapcam("train", "nosuch", cwd=tmp_path), "nosuch")
    one_line_error(gapcam("train", "shapes", "--device", "cuda:7", "--samples", 20, cwd=tmp_path), "--device")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # runs python -m export and -m train
def test_fifos_are_refused_unread_and_listed_when_found_in_folders(tiny_onnx, tmp_path, shape_images):
    import os

    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    for command in (
        ["-m", "zoo", "pack", str(tiny_onnx), "--name", "x", "--version", "1.0.0", "--metrics", str(fifo), "-o", str(tmp_path / "p")],
        ["-m", "zoo", "pack", str(tiny_onnx), "--name", "x", "--version", "1.0.0", "--card", str(fifo), "-o", str(tmp_path / "p")],
        ["-m", "export", str(tiny_onnx), "--arch", "resnet18", "--labels", str(fifo)],
        ["-m", "train", "shapes", "--backbone", "resnet18", "--weights", str(fifo), "--samples", "20", "--out", str(tmp_path / "w.pt")],
    ):
        done = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "Traceback" not in done.stderr, (command, done.stderr)
        assert "regular file" in done.stderr, (command, done.stderr)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(shape_images.images[0]).save(images / "a.png")
    os.mkfifo(images / "b.png")
    (images / "c.png").symlink_to(images / "c.png")  # a link loop
    done = subprocess.run(
        [sys.executable, "-m", "runtime", str(tiny_onnx), str(images), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    skipped = json.loads((tmp_path / "out" / "results.json").read_text())["skipped"]
    assert sorted(Path(s["file"]).name for s in skipped) == ["b.png", "c.png"]


def test_outputs_that_cannot_be_written_are_one_line_errors_before_the_work(tiny_onnx, tiny_checkpoint, tmp_path, shape_images):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    image = tmp_path / "a.png"
    Image.fromarray(shape_images.images[0]).save(image)
    for command in (
        ["-m", "train", "shapes", "--samples", "6000", "--out", str(blocked / "x.pt")],  # would take minutes if it trained first
        ["-m", "export", str(tiny_checkpoint), "-o", str(blocked / "x.onnx")],
        ["-m", "runtime", str(tiny_onnx), str(image), "--out", str(blocked / "out")],
        ["-m", "runtime", "explain", str(tiny_onnx), str(image), "--out", str(blocked / "x.png")],
        ["-m", "zoo", "pack", str(tiny_onnx), "--name", "x", "--version", "1.0.0", "-o", str(blocked / "p")],
    ):
        done = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and "Traceback" not in done.stderr, (command, done.stderr)
        assert "blocked" in done.stderr and len(done.stderr.strip().splitlines()) == 1, (command, done.stderr)


def test_run_eval_and_zoo_list_speak_json_and_errors_name_the_option(tiny_onnx, tmp_path, shape_images):
    image = tmp_path / "a.png"
    Image.fromarray(shape_images.images[0]).save(image)
    done = subprocess.run(
        [sys.executable, "-m", "runtime", str(tiny_onnx), str(image), "--out", str(tmp_path / "o"), "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"][0]["file"] == str(image)
    plain = subprocess.run(
        [sys.executable, "-m", "runtime", str(tiny_onnx), str(image), "--out", str(tmp_path / "p")], capture_output=True, text=True
    )
    assert "wrote 1 overlay," in plain.stdout and plain.stdout.index("file ") < plain.stdout.index("a.png")
    too_many = subprocess.run(
        [sys.executable, "-m", "runtime", str(tiny_onnx), str(image), "--out", str(tmp_path / "q"), "--topk", "10"],
        capture_output=True,
        text=True,
    )
    assert too_many.returncode == 1 and too_many.stdout == "" and "--topk 10: the model has 5 classes" in too_many.stderr
    assert not (tmp_path / "q").exists()
    metrics = subprocess.run(
        [sys.executable, "-m", "runtime", "eval", str(tiny_onnx), "shapes", "--count", "8", "--out", str(tmp_path / "l"), "--json"],
        capture_output=True,
        text=True,
    )
    assert metrics.returncode == 0 and json.loads(metrics.stdout)["images"] == 8, metrics.stderr
    listed = subprocess.run([sys.executable, "-m", "zoo", "list", "--json"], capture_output=True, text=True)
    assert [(e["name"], e["version"]) for e in json.loads(listed.stdout)] == [("fer2013-minixception", "1.0.0"), ("shapes", "1.1.0")]

"""The `folder` and `cub` recipes on small trees in the real layouts: train, export and evaluate
end to end, and every bad layout is a one-line error."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures import write_cub, write_image_folder
from runtime import CamSession
from runtime.evaluation.shapes import CLASSES
from train import SamplerState, TrainError, load_checkpoint
from train.loop import TrainConfig, fit, last_path, resume
from train.recipes import CUB, FOLDER, DataOptions

SMALL = {"backbone": "small_cnn", "cam_channels": 16, "width": 64, "height": 64, "batch_size": 8}  # fast on a CPU


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("tree"), per_class=6)


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    return write_cub(tmp_path_factory.mktemp("cub") / "CUB_200_2011", per_class=8)


def small_training(data, epochs: int, workers: int, out: str) -> list[str]:
    """`python -m train` options for SMALL's model on `data` (the command-line twin of SMALL)."""
    return [
        "--data",
        str(data),
        "--epochs",
        str(epochs),
        "--backbone",
        SMALL["backbone"],
        "--size",
        str(SMALL["width"]),
        "--cam-channels",
        str(SMALL["cam_channels"]),
        "--batch-size",
        str(SMALL["batch_size"]),
        "--workers",
        str(workers),
        "--out",
        out,
    ]


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_folder_defaults_are_a_practitioners(tree):
    recipe = FOLDER.resolve_labels(DataOptions(tree))
    assert recipe.labels == tuple(sorted(CLASSES)) and recipe.architecture.num_classes == len(CLASSES)
    assert recipe.architecture.backbone == "resnet18" and recipe.preprocess.size == (224, 224)
    assert recipe.preprocess.mean == (0.485, 0.456, 0.406) and recipe.pretrained
    assert recipe.augment.crop_scale == (0.25, 1.0) and recipe.augment.hflip


def test_folder_trains_exports_and_evaluates_from_the_command_line(tree, tmp_path):
    done = run(
        "train",
        "folder",
        *small_training(tree, epochs=2, workers=1, out="mine.pt"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "validation: a stratified 10%" in done.stdout and "decoded once into a cache file" in done.stdout
    assert "CAM box threshold" in done.stdout  # boxes.csv rows for the carved validation images calibrate it
    checkpoint = load_checkpoint(tmp_path / "mine.pt")
    assert checkpoint.labels == sorted(CLASSES) and checkpoint.preprocess["height"] == 64
    assert checkpoint.localization["val_images_with_boxes"] == 5 and 0 < checkpoint.box_threshold < 1
    assert run("export", tmp_path / "mine.pt", cwd=tmp_path).returncode == 0
    session = CamSession(tmp_path / "mine.onnx")
    assert session.labels == sorted(CLASSES) and session.box_threshold == checkpoint.box_threshold
    evaluated = run("runtime", "eval", tmp_path / "mine.onnx", tree / "test", "--out", "loc", "--json", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["images"] == 3 * len(CLASSES) and 0 <= metrics["top1_localization_accuracy"] <= 1
    scored = run("train", "eval", tmp_path / "mine.pt", "--split", "test", cwd=tmp_path)
    assert scored.returncode == 0 and f"test: {3 * len(CLASSES)} images" in scored.stdout, scored.stderr


def test_folder_defaults_train_resnet18_at_224_from_scratch_when_no_weights_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache: nothing is downloaded
    tree = write_image_folder(tmp_path / "tiny", per_class=2, test=0, boxes=False)
    lines = []
    fit(TrainConfig(recipe="folder", data=str(tree), out=str(tmp_path / "r18.pt"), epochs=1, workers=0), log=lines.append)
    assert any("training resnet18 from scratch" in line for line in lines)
    checkpoint = load_checkpoint(tmp_path / "r18.pt")
    assert checkpoint.architecture["backbone"] == "resnet18" and checkpoint.preprocess["width"] == 224
    assert checkpoint.provenance.init == "random" and checkpoint.training.config["pretrained"] is False


def test_an_official_val_folder_and_a_label_file_are_used(tmp_path):
    tree = write_image_folder(tmp_path / "withval", per_class=3, val=True, test=0)
    order = ["star", "circle", "square", "triangle", "cross"]
    (tmp_path / "labels.txt").write_text("\n".join(order) + "\n")
    options = DataOptions(tree, labels_file=tmp_path / "labels.txt")
    recipe = FOLDER.resolve_labels(options)
    assert recipe.labels == tuple(order)
    train, val = recipe.read_split(options, "train"), recipe.read_split(options, "val")
    assert len(train.images) == 15 and len(val.images) == 10 and train.boxes is None and val.boxes is not None
    assert all(str(p).split("/")[-2] == order[label] for p, label in zip(val.images, val.labels, strict=True))
    data = recipe.load(options, cache="off")
    sizes = {Image.open(p).size[0] for p in val.images}
    assert sizes == {64, 96}  # boxes.csv is in each image's own pixels ...
    for path, written, scaled in zip(val.images, val.boxes, data.val_boxes, strict=True):  # ... and calibration in the model's 224
        np.testing.assert_allclose(scaled, written * 224 / Image.open(path).size[0])


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda root: root.mkdir(), "expected .*train/<class>/ folders"),
        (lambda root: (root / "train" / "only").mkdir(parents=True), "needs at least two class folders"),
        (lambda root: [(root / "train" / c).mkdir(parents=True) for c in ("a", "b")], "no images in class folders"),
    ],
)
def test_bad_folder_layouts_are_one_line_errors(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(TrainError, match=message):
        fit(TrainConfig(recipe="folder", data=str(root), out=str(tmp_path / "x.pt"), epochs=1, workers=0, **SMALL), log=lambda s: None)


def test_a_class_without_training_images_and_bad_label_files_are_refused(tree, tmp_path):
    (tmp_path / "extra.txt").write_text("circle\nsquare\nunicorn\n")
    with pytest.raises(TrainError, match=r"no images for classes \['unicorn'\]"):
        FOLDER.resolve_labels(DataOptions(tree, labels_file=tmp_path / "extra.txt")).read_split(DataOptions(tree), "train")
    (tmp_path / "twice.txt").write_text("circle\ncircle\n")
    with pytest.raises(TrainError, match=r"twice.txt: names \['circle'\] appear twice"):
        FOLDER.resolve_labels(DataOptions(tree, labels_file=tmp_path / "twice.txt"))


def test_boxes_of_another_class_are_refused(tmp_path):
    tree = write_image_folder(tmp_path / "t", per_class=2, test=0)
    rows = (tree / "boxes.csv").read_text().splitlines()
    first = rows[1].split(",")
    other = next(c for c in CLASSES if c != first[-1])
    (tree / "boxes.csv").write_text("\n".join([rows[0], ",".join(first[:-1] + [other])]) + "\n")
    with pytest.raises(TrainError, match=f"is in class folder '{first[-1]}' but its boxes say '{other}'"):
        FOLDER.resolve_labels(DataOptions(tree)).read_split(DataOptions(tree), "val")


def test_streamed_runs_resume_exactly_whatever_the_workers(tree, tmp_path):
    """Two epochs straight with 2 workers equal one epoch with none plus --resume with 1, streamed from the files."""
    settings = dict(recipe="folder", data=str(tree), epochs=2, cache="off", **SMALL)
    fit(TrainConfig(out=str(tmp_path / "straight.pt"), workers=2, **settings), log=lambda s: None)
    fit(TrainConfig(out=str(tmp_path / "split.pt"), workers=0, stop_after=1, **settings), log=lambda s: None)
    resume(last_path(tmp_path / "split.pt"), log=lambda s: None, workers=1)
    straight, resumed = load_checkpoint(last_path(tmp_path / "straight.pt")), load_checkpoint(last_path(tmp_path / "split.pt"))
    assert resumed.training.sampler == SamplerState(seed=0, epoch=2, processes=1)
    for key, value in straight.model.items():
        assert torch.equal(value, resumed.model[key]), key
    cached = tmp_path / "cached.pt"
    fit(TrainConfig(out=str(cached), workers=1, **{**settings, "cache": "on"}), log=lambda s: None)
    for key, value in straight.model.items():  # the cache holds the very pixels the files decode to
        assert torch.equal(value, load_checkpoint(last_path(cached)).model[key]), key


def test_cub_trains_exports_and_evaluates_on_its_own_layout(cub, tmp_path):
    recipe = CUB.resolve_labels(DataOptions(cub))
    assert recipe.labels == tuple(f"{i + 1:03d}.{c}" for i, c in enumerate(CLASSES))  # classes.txt, in id order
    assert CUB.architecture.backbone == "resnet50" and CUB.pretrained and CUB.preprocess.size == (224, 224)
    train = recipe.read_split(DataOptions(cub), "train")
    val = recipe.read_split(DataOptions(cub), "val")
    assert len(train.images) + len(val.images) == 4 * len(CLASSES) and len(val.images) == len(CLASSES)
    assert not {str(p) for p in train.images} & {str(p) for p in val.images}
    done = run(
        "train",
        "cub",
        *small_training(cub, epochs=1, workers=0, out="cub.pt"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "200" not in done.stdout.split("classes")[0][-6:]  # this tree has the 5 classes its classes.txt lists
    checkpoint = load_checkpoint(tmp_path / "cub.pt")
    assert checkpoint.localization["val_images_with_boxes"] == len(CLASSES)
    assert run("export", tmp_path / "cub.pt", cwd=tmp_path).returncode == 0
    evaluated = run("runtime", "eval", tmp_path / "cub.onnx", cub, "--out", "loc", "--json", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["images"] == 4 * len(CLASSES)  # CUB's official test split


def test_cub_without_its_index_files_is_a_one_line_error(tmp_path):
    (tmp_path / "images").mkdir()
    done = run("train", "cub", "--data", tmp_path, "--epochs", "1", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "not CUB-200-2011 as it ships" in done.stderr


def test_input_options_reshape_the_recipe(tree):
    config = TrainConfig(recipe="folder", data=str(tree), out="x.pt", width=96, height=64, color="L")
    recipe = config.build_recipe()
    assert recipe.preprocess.size == (64, 96) and recipe.architecture.in_channels == 1
    assert recipe.preprocess.mean == pytest.approx((np.mean((0.485, 0.456, 0.406)),))  # carried over to one channel
    resolved = config.resolved(recipe)
    assert (resolved.width, resolved.height, resolved.color, resolved.mean) == (96, 64, "L", recipe.preprocess.mean)
    with pytest.raises(TrainError, match="mean and std need 3 values"):
        TrainConfig(recipe="folder", data=str(tree), out="x.pt", mean=(0.5,)).build_recipe()


def test_bad_command_line_values_are_named(tree, tmp_path):
    bad_size = run("train", "folder", "--data", tree, "--size", "64x", cwd=tmp_path)
    assert bad_size.returncode == 2 and "--size" in bad_size.stderr and "WIDTHxHEIGHT" in bad_size.stderr
    bad_mean = run("train", "folder", "--data", tree, "--mean", "a,b,c", cwd=tmp_path)
    assert bad_mean.returncode == 2 and "--mean" in bad_mean.stderr
    fit(
        TrainConfig(recipe="folder", data=str(tree), out=str(tmp_path / "r.pt"), epochs=2, stop_after=1, workers=0, **SMALL),
        log=lambda s: None,
    )
    changed = run("train", "folder", "--resume", tmp_path / "r.last.pt", "--size", "32", cwd=tmp_path)
    assert changed.returncode == 1 and "--resume continues a run as it was set up: --size cannot change" in changed.stderr


def test_the_head_learns_faster_than_a_pretrained_backbone():
    from train.loop import make_optimizer
    from train.models import GapCam

    recipe = FOLDER.with_labels(CLASSES).with_arch(backbone="small_cnn", cam_channels=8)
    optimizer = make_optimizer(GapCam(recipe.architecture), recipe, 0.01)
    assert [group["lr"] for group in optimizer.param_groups] == [0.01, 0.1]
    shapes = make_optimizer(GapCam(recipe.architecture), replace(recipe, head_lr_scale=1.0), 0.01)
    assert len(shapes.param_groups) == 1  # the other recipes keep one group, so their older checkpoints resume

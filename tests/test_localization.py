"""Localization metrics: hand-computed cases with a stub session, the shapes and folder data sets, the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from runtime import CamError
from runtime.evaluation.datasets import GroundTruth, folder_ground_truth
from runtime.evaluation.localization import evaluate_localization, pixel_average_precision
from runtime.maps.methods import METHODS
from runtime.maps.results import CamResult


class StubSession:
    """Returns fixed [0, 1] maps, so every metric can be worked out by hand."""

    box_threshold = 0.5

    def __init__(self, cams, predicted):
        self.cams, self.predicted = cams, predicted

    def run(self, pictures, classes, method):
        results = []
        for i in range(len(pictures)):
            index = self.calls + i
            logits = np.zeros(2, np.float32)
            logits[self.predicted[index]] = 1.0
            cam = self.cams[index]
            results.append(CamResult(logits, logits, classes[i], ["a"], cam[None], cam[None], np.zeros((1, 4), np.int64), cam.shape))
        self.calls += len(pictures)
        return results

    calls = 0


def blob(box, size=20, value=1.0, background=0.0):
    cam = np.full((size, size), background, np.float32)
    x0, y0, x1, y1 = box
    cam[y0:y1, x0:x1] = value
    return cam


def test_metrics_by_hand():
    true_boxes = [np.array([[2, 2, 10, 10]]), np.array([[5, 5, 15, 15]]), np.array([[0, 0, 4, 4], [10, 10, 20, 20]])]
    cams = [
        blob((2, 2, 10, 10)),  # exact: IoU 1 at every threshold in (0, 1]
        blob((5, 5, 15, 10)),  # half the true box: IoU 0.5
        blob((10, 10, 20, 20), value=1.0, background=0.6),  # above 0.6: the second true box; below: whole image
    ]
    masks = [blob((2, 2, 10, 10)) > 0, None, None]
    truth = GroundTruth(["a", "b", "c"], [np.zeros((20, 20, 3), np.uint8)] * 3, np.array([0, 1, 0]), true_boxes, masks)
    metrics = evaluate_localization(StubSession(cams, predicted=[0, 0, 0]), truth, threshold_step=0.1)
    # at the model's 0.5: image a IoU 1, b IoU 0.5, c whole image (IoU 100/400 = 0.25 with its best box)
    assert metrics["gt_known_localization_accuracy"] == pytest.approx(2 / 3)
    assert metrics["top1_localization_accuracy"] == pytest.approx(1 / 3)  # b is misclassified
    assert metrics["classification_accuracy"] == pytest.approx(2 / 3)
    # from threshold 0.7 on, c's box is its second true box: all three pass at IoU 0.5
    assert metrics["max_box_accuracy"]["0.5"] == {"value": pytest.approx(1.0), "threshold": pytest.approx(0.7)}
    assert metrics["max_box_accuracy"]["0.7"]["value"] == pytest.approx(2 / 3)  # b never reaches 0.7
    assert metrics["mean_max_box_accuracy"] == pytest.approx((1 + 1 + 2 / 3) / 3)
    assert metrics["pxap"] == pytest.approx(1.0) and metrics["images_with_masks"] == 1


def test_pixel_average_precision_by_hand():
    # scores: positives at bins 3, 2; negatives at bins 2, 0 (bins ascend in value)
    positive = np.array([0, 0, 1, 1.0])
    negative = np.array([1, 0, 1, 0.0])
    # from the top: bin 3 -> P 1, R .5; bin 2 -> P 2/3, R 1; lower bins add no recall
    assert pixel_average_precision(positive, negative) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_shapes_localization_is_consistent(session):
    from runtime.evaluation.datasets import shapes_ground_truth

    metrics = evaluate_localization(session, shapes_ground_truth(24, 3, 64), threshold_step=0.05)
    assert (
        metrics["top1_localization_accuracy"]
        <= metrics["gt_known_localization_accuracy"]
        <= metrics["max_box_accuracy"]["0.5"]["value"] + 1e-9
    )
    curve = metrics["box_accuracy_curve"]
    assert len(curve["thresholds"]) == 20
    assert all(a >= b >= c for a, b, c in zip(curve["0.3"], curve["0.5"], curve["0.7"], strict=True))
    assert 0.0 <= metrics["pxap"] <= 1.0 and metrics["images_with_masks"] == 24


@pytest.fixture()
def box_folder(tmp_path, shape_images):
    from runtime.evaluation.shapes import CLASSES

    rows = ["path,x0,y0,x1,y1,label"]
    (tmp_path / "masks").mkdir()
    for i in range(4):
        Image.fromarray(shape_images.images[i]).save(tmp_path / f"im{i}.png")
        x0, y0, x1, y1 = shape_images.boxes[i].tolist()
        rows.append(f"im{i}.png,{x0},{y0},{x1},{y1},{CLASSES[shape_images.labels[i]]}")
        if i < 2:
            Image.fromarray(shape_images.masks[i].astype(np.uint8) * 255).save(tmp_path / "masks" / f"im{i}.png")
    rows.append(f"im0.png,0,0,5,5,{CLASSES[shape_images.labels[0]]}")  # a second box for im0
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_folder_ground_truth(box_folder):
    from runtime.evaluation.shapes import CLASSES

    truth = folder_ground_truth(box_folder, list(CLASSES))
    assert truth.names == ["im0.png", "im1.png", "im2.png", "im3.png"]
    assert len(truth.boxes[0]) == 2 and truth.masks[0] is not None and truth.masks[3] is None


@pytest.mark.parametrize(
    "content,message",
    [
        ("path,x0,y0\n", "needs the columns"),
        ("path,x0,y0,x1,y1,label\na.png,0,0,4,4,zebra\n", "label 'zebra'"),
        ("path,x0,y0,x1,y1,label\na.png,5,0,4,4,circle\n", "x1 > x0"),
        ("path,x0,y0,x1,y1,label\na.png,0,0,4,4,circle\na.png,0,0,4,4,star\n", "two classes"),
    ],
)
def test_bad_box_tables_name_the_line(tmp_path, content, message):
    (tmp_path / "boxes.csv").write_text(content)
    with pytest.raises(CamError, match=message):
        folder_ground_truth(tmp_path, ["circle", "square", "triangle", "star", "cross"])


def test_eval_cli_on_shapes_and_on_a_folder(tiny_onnx, box_folder, tmp_path):
    def runtime_eval(*args):
        return subprocess.run(
            [sys.executable, "-m", "runtime", "eval", str(tiny_onnx), *map(str, args)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = runtime_eval("shapes", "--count", 12, "--out", "loc")
    assert done.returncode == 0, done.stderr
    assert "MaxBoxAcc @ IoU 0.5" in done.stdout and "PxAP" in done.stdout
    report = json.loads((tmp_path / "loc" / "localization.json").read_text())
    assert report["images"] == 12 and set(report["definitions"]) >= {"pxap", "max_box_accuracy"}
    assert Image.open(tmp_path / "loc" / "box_accuracy.png").size == (720, 440)
    folder = runtime_eval(box_folder, "--out", "loc2", "--method", "gradcam")
    assert folder.returncode == 0, folder.stderr
    gradcam = json.loads((tmp_path / "loc2" / "localization.json").read_text())
    assert gradcam["images_with_masks"] == 2 and gradcam["method"] == "gradcam"
    assert gradcam["method_summary"] == METHODS["gradcam"].summary and gradcam["method_exact_for_gap"] is True  # the registry
    bad = runtime_eval(tmp_path / "nowhere")
    assert bad.returncode == 1 and "not `shapes` and not a folder" in bad.stderr


def test_cub_layout_is_read_as_it_ships(session, tmp_path):
    from fixtures import write_cub
    from runtime.evaluation.datasets import cub_ground_truth, is_cub

    root = write_cub(tmp_path / "CUB_200_2011")
    assert is_cub(root) and not is_cub(tmp_path)
    truth = cub_ground_truth(root, session.labels)
    lines = dict(line.split(" ", 1) for line in (root / "images.txt").read_text().splitlines())
    split = dict(line.split() for line in (root / "train_test_split.txt").read_text().splitlines())
    assert truth.names == [lines[i] for i in sorted(lines, key=int) if split[i] == "0"]  # the test split only
    assert len(truth.names) == 2 * len(session.labels)
    first = truth.names[0]
    image_id = next(i for i, name in lines.items() if name == first)
    x, y, w, h = map(
        float, next(row for row in (root / "bounding_boxes.txt").read_text().splitlines() if row.split()[0] == image_id).split()[1:]
    )
    assert truth.boxes[0].tolist() == [[x, y, x + w, y + h]]
    assert truth.labels[0] == session.labels.index(first.split("/")[0].split(".", 1)[1])
    assert sum(mask is not None for mask in truth.masks) == 1
    assert len(cub_ground_truth(root, session.labels, split="train").names) == 2 * len(session.labels)
    numbered = [f"{i + 1:03d}.{label}" for i, label in enumerate(session.labels)]  # labels as classes.txt writes them
    assert cub_ground_truth(root, numbered).labels.tolist() == truth.labels.tolist()
    with pytest.raises(CamError, match="not one of the model's labels"):
        cub_ground_truth(root, ["cat", "dog"])
    (root / "bounding_boxes.txt").write_text("1 2 3\n")
    with pytest.raises(CamError, match=r"bounding_boxes.txt, line 1: expected 5 columns"):
        cub_ground_truth(root, session.labels)


def test_eval_cli_scores_a_cub_tree(tiny_onnx, session, tmp_path):
    from fixtures import write_cub
    from runtime.evaluation.datasets import cub_ground_truth

    root = write_cub(tmp_path / "CUB_200_2011")
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "eval", str(tiny_onnx), str(root), "--out", str(tmp_path / "loc"), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    expected = evaluate_localization(session, cub_ground_truth(root, session.labels))
    assert metrics["images"] == expected["images"] == 10 and metrics["images_with_masks"] == 1
    assert metrics["gt_known_localization_accuracy"] == expected["gt_known_localization_accuracy"]
    assert metrics["mean_max_box_accuracy_v2"] == expected["mean_max_box_accuracy_v2"]

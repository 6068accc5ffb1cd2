"""Multi-label models end to end: the objective (sigmoid, BCE weighted per class, thresholds
calibrated on validation data), the checkpoint and ONNX fields, export parity, the INT8 gate's
multi-label figures, zoo test vectors and evaluation."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from export import export_checkpoint
from export.int8 import NO_GATE, NO_SPEED_GATE, Int8Options, measure_fidelity, quantize_model
from export.recipe_data import recipe_calibration
from runtime import CamSession
from train.checkpoint import load_checkpoint
from train.errors import TrainError
from train.evaluate import evaluate_checkpoint
from train.loop import TrainConfig, fit
from train.objectives import MultiLabel, as_targets
from zoo import pack, verify

pytestmark = pytest.mark.slow  # trains


@pytest.fixture(scope="module")
def multilabel_checkpoint(tmp_path_factory):
    lines = []
    out = tmp_path_factory.mktemp("multilabel") / "shapes.pt"
    fit(TrainConfig(recipe="shapes", out=str(out), samples=160, epochs=2, cam_channels=32, multilabel=True), log=lines.append)
    return out, lines


@pytest.fixture(scope="module")
def multilabel_onnx(multilabel_checkpoint):
    return export_checkpoint(multilabel_checkpoint[0])


def test_the_loss_weighs_each_class_positives_by_its_negatives():
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    goal = MultiLabel()
    weights = goal.class_weights(targets, 2)
    assert weights.tolist() == [3.0, 1.0]  # a: 1 positive, 3 negatives; b: 2 and 2
    logits = torch.randn(4, 2)
    expected = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weights, reduction="none").sum(1).mean()
    assert goal.loss(logits, targets, weights).item() == pytest.approx(expected.item())


def test_targets_are_one_hot_for_single_label_data_and_refused_when_they_do_not_fit():
    assert as_targets(np.array([2, 0]), 3, True, "x").tolist() == [[0, 0, 1], [1, 0, 0]]
    assert as_targets(np.array([2, 0]), 3, False, "x").dtype == np.int64
    with pytest.raises(TrainError, match="x: the data is multi-label .* --multilabel"):
        as_targets(np.ones((2, 3)), 3, False, "x")
    with pytest.raises(TrainError, match="x: multi-label targets must be 0/1 for 3 classes"):
        as_targets(np.full((2, 3), 0.5), 3, True, "x")


def test_a_multilabel_run_writes_a_sigmoid_checkpoint_with_calibrated_thresholds(multilabel_checkpoint):
    path, lines = multilabel_checkpoint
    checkpoint = load_checkpoint(path)
    assert checkpoint.activation == "sigmoid" and len(checkpoint.thresholds) == len(checkpoint.labels)
    assert all(0 <= t <= 1 for t in checkpoint.thresholds)
    # one-hot targets: every validation image has one positive class, so each one's box calibrates the threshold
    assert checkpoint.localization["val_images_with_boxes"] == checkpoint.provenance.images["val"]
    history = checkpoint.training.history
    assert {"val_mean_auroc", "train_label_accuracy", "val_loss"} <= set(history[-1])
    assert checkpoint.training.best_accuracy == max(h["val_mean_auroc"] for h in history)
    assert any("positives weighted by negatives/positives" in line for line in lines)
    assert any(line.startswith("decision thresholds (best validation F1)") for line in lines)
    report = json.loads(path.with_name("shapes.val.metrics.json").read_text())
    assert report["activation"] == "sigmoid" and set(report["per_class"]) == set(checkpoint.labels)
    assert [report["per_class"][label]["threshold"] for label in checkpoint.labels] == pytest.approx(checkpoint.thresholds)
    assert path.with_name("shapes.val.per_class.png").is_file()


def test_single_label_checkpoints_stay_softmax(tiny_checkpoint):
    assert load_checkpoint(tiny_checkpoint).activation == "softmax" and load_checkpoint(tiny_checkpoint).thresholds == []


def test_export_records_the_activation_and_thresholds_and_passes_parity(multilabel_checkpoint, multilabel_onnx):
    checkpoint = load_checkpoint(multilabel_checkpoint[0])
    assert multilabel_onnx.parity["passed"]
    session = CamSession(multilabel_onnx.path)
    assert session.info.activation == "sigmoid" and session.info.thresholds == pytest.approx(checkpoint.thresholds)


def test_evaluation_reports_each_class_auroc_and_f1(multilabel_checkpoint, tmp_path):
    metrics, written = evaluate_checkpoint(multilabel_checkpoint[0], None, "test", tmp_path)
    assert metrics["activation"] == "sigmoid" and 0 <= metrics["mean_auroc"] <= 1
    assert sorted(p.name for p in written) == ["shapes.curves.png", "shapes.test.metrics.json", "shapes.test.per_class.png"]
    from train.__main__ import main

    done = CliRunner().invoke(main, ["eval", str(multilabel_checkpoint[0]), "--out", str(tmp_path / "cli")])
    assert done.exit_code == 0, done.output
    assert "mean ROC AUC" in done.output and "AUROC" in done.output


def test_the_int8_gate_measures_positive_sets_and_probability_differences(multilabel_checkpoint, multilabel_onnx, tmp_path):
    session = CamSession(multilabel_onnx.path)
    images = list(recipe_calibration(multilabel_checkpoint[0], calibration_images=20, held_out_images=20).held_out)
    same = measure_fidelity(session, session, images)
    assert same["positive_set_agreement"] == 1.0 and same["prob_difference"] == {"median": 0.0, "p95": 0.0, "max": 0.0}
    data = recipe_calibration(multilabel_checkpoint[0], calibration_images=20, held_out_images=20)
    report = quantize_model(multilabel_onnx.path, Int8Options(data, gate=NO_GATE, speed_gate=NO_SPEED_GATE), name=tmp_path / "m.onnx")
    fidelity = report.quantization["fidelity"]
    assert 0 <= fidelity["positive_set_agreement"] <= 1 and fidelity["prob_difference"]["p95"] >= 0
    strict = replace(NO_GATE, max_prob_difference_p95=0.0, min_positive_set_agreement=1.01)
    failures = strict.failures(fidelity)
    assert any("positive-set agreement" in f and "(--min-positive-agreement)" in f for f in failures)
    assert fidelity["prob_difference"]["p95"] == 0 or any("(--max-prob-difference)" in f for f in failures)
    # the gate refuses with the multi-label figure in its one line, and writes nothing
    from export.int8 import Int8Refused

    with pytest.raises(Int8Refused, match=r"positive-set agreement \d\.\d{3} < 1\.01 \(--min-positive-agreement\).*nothing written"):
        quantize_model(multilabel_onnx.path, Int8Options(data, gate=strict, speed_gate=NO_SPEED_GATE), name=tmp_path / "refused.onnx")
    assert not (tmp_path / "refused.int8.onnx").exists()


def test_zoo_vectors_replay_every_class_and_the_positive_sets(multilabel_onnx, tmp_path, shape_images):
    from PIL import Image

    images = []
    for i, pixels in enumerate(shape_images.images[:3]):
        Image.fromarray(pixels).save(tmp_path / f"in{i}.png")
        images.append(tmp_path / f"in{i}.png")
    packed = pack(multilabel_onnx.path, "multi", "0.1.0", tmp_path / "dist", license="MIT", images=images)
    report = verify(packed.folder)
    assert report.passed, report
    with np.load(packed.folder / "test_vectors.npz") as vectors:
        assert vectors["positives"].shape[1] == vectors["classes"].shape[1] == 5 and len(vectors["positives"]) >= 3
    # a replay whose positive classes differ fails
    from zoo.vectors import replay_vectors

    data = (packed.folder / "test_vectors.npz").read_bytes()
    flipped = CamSession(multilabel_onnx.path)
    flipped.info.thresholds = [1.0 - t for t in flipped.info.thresholds]
    assert replay_vectors(CamSession(multilabel_onnx.path), data)["passed"] and not replay_vectors(flipped, data)["classes_agree"]


def test_resume_cannot_change_the_objective(multilabel_checkpoint, tmp_path):
    from train.__main__ import main
    from train.loop import last_path, resume

    last = last_path(multilabel_checkpoint[0])
    with pytest.raises(TrainError, match=r"the run trains a multi-label model; --resume cannot change that"):
        resume(last, log=lambda line: None, multilabel=False, out=str(tmp_path / "again.pt"))
    done = CliRunner().invoke(main, ["shapes", "--resume", str(last), "--single-label"])
    assert done.exit_code == 1 and "--multilabel cannot change" in done.output and "Traceback" not in done.output


def test_the_latest_checkpoint_evaluates_at_the_default_thresholds(multilabel_checkpoint, tmp_path):
    from train.loop import last_path

    last = last_path(multilabel_checkpoint[0])
    assert load_checkpoint(last).thresholds == []  # calibrated only into the best checkpoint
    metrics, _ = evaluate_checkpoint(last, None, "val", tmp_path)
    assert {row["threshold"] for row in metrics["per_class"].values()} == {0.5}

"""Evaluation metrics against hand-computed values, and `python -m train eval`."""

import json
import subprocess
import sys

import numpy as np
import pytest

from fixtures import write_chest_xray
from runtime.evaluation.multilabel import roc_auc
from train.evaluate import classification_metrics
from train.loop import TrainConfig, fit


def one_hot_probs(predictions, classes):
    probs = np.full((len(predictions), classes), 0.1)
    probs[np.arange(len(predictions)), predictions] = 0.8
    return probs


def test_multiclass_metrics_by_hand():
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 2])
    m = classification_metrics(y_true, one_hot_probs(y_pred, 3), ["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class b: tp 2, predicted 3, actual 3 -> precision 2/3, recall 2/3
    assert m["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    # class c: tp 1, predicted 2, actual 1 -> precision 1/2, recall 1, F1 2/3
    assert m["per_class"]["c"]["precision"] == pytest.approx(0.5) and m["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 2 / 3) / 3)
    assert "roc_auc" not in m


def test_binary_metrics_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 1, 1])
    p_positive = np.array([0.1, 0.6, 0.3, 0.9, 0.4, 0.8, 0.7])
    m = classification_metrics(y_true, np.stack([1 - p_positive, p_positive], axis=1), ["NORMAL", "PNEUMONIA"])
    # predictions at 0.5: [0,1,0,1,0,1,1]: TP 3, FN 1, TN 2, FP 1
    assert m["sensitivity"] == pytest.approx(3 / 4) and m["specificity"] == pytest.approx(2 / 3)
    # AUC: of the 12 (positive, negative) pairs, the positive scores higher in 11 (0.4 < 0.6)
    assert m["roc_auc"] == pytest.approx(11 / 12)


def test_roc_auc_counts_ties_as_half():
    assert roc_auc(np.array([0.5, 0.5, 0.2, 0.9]), np.array([1, 0, 0, 1])) == pytest.approx(3.5 / 4)
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_eval_cli_writes_metrics_and_plots(tmp_path):
    data = write_chest_xray(tmp_path / "data", corrupt=False)
    fit(
        TrainConfig(recipe="chest-xray", out=str(tmp_path / "cx.pt"), data=str(data), epochs=1, cam_channels=16, batch_size=16),
        log=lambda s: None,
    )
    done = subprocess.run(
        [sys.executable, "-m", "train", "eval", "cx.pt", "--split", "test"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "ROC AUC" in done.stdout and "sensitivity" in done.stdout
    metrics = json.loads((tmp_path / "cx.test.metrics.json").read_text())
    assert metrics["images"] == 12 and metrics["split"] == "test"
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
    assert (tmp_path / "cx.test.confusion.png").stat().st_size > 1000 and (tmp_path / "cx.curves.png").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "train", "eval", "cx.pt", "--data", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "missing folder" in bad.stderr

"""Multi-label models in the runtime: sigmoid probabilities, per-class thresholds, the positive
classes and their maps; softmax models and files without the fields behave as before."""

import json

import numpy as np
import pytest

from fixtures import multilabel_copy
from runtime import CamError, CamSession, ModelInfo
from runtime.evaluation.multilabel import best_f1_threshold, multilabel_metrics
from runtime.formats.onnx_model import DEFAULT_THRESHOLD


def sigmoid64(logits):
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


@pytest.fixture(scope="module")
def thresholds(session, shape_images):
    """Per-class thresholds at the 80th percentile of each class's sigmoid on the images: some images get
    several positive classes, some none, so the per-image lists are ragged."""
    logits = session.logits(session.to_batch(list(shape_images.images)))
    return [float(t) for t in np.percentile(sigmoid64(logits), 80, axis=0)]


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory, tiny_onnx, thresholds):
    path = multilabel_copy(tiny_onnx, tmp_path_factory.mktemp("multilabel") / "multi.onnx", thresholds)
    return CamSession(path, providers=["CPUExecutionProvider"])


def test_files_without_an_activation_are_softmax_models(session):
    assert session.info.activation == "softmax" and session.info.thresholds == [] and not session.info.multilabel


def test_the_activation_and_thresholds_round_trip(multilabel, thresholds):
    again = ModelInfo.from_props(multilabel.info.to_props())
    assert again.activation == "sigmoid" and again.thresholds == pytest.approx(thresholds)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"activation": "relu"}, r"activation must be one of \('softmax', 'sigmoid'\), got 'relu'"),
        ({"thresholds": [0.5] * 5}, "thresholds are for sigmoid"),
        ({"activation": "sigmoid", "thresholds": [0.5, 0.5]}, "2 thresholds do not fit 5 labels"),
        ({"activation": "sigmoid", "thresholds": [0.5, 0.5, 0.5, 0.5, 1.5]}, r"thresholds must be a list of numbers within \[0, 1\]"),
        ({"activation": "sigmoid", "thresholds": "high"}, "thresholds must be a list"),
    ],
)
def test_bad_activation_fields_are_refused_in_one_line(session, changes, message):
    values = {key: getattr(session.info, key) for key in ("labels", "preprocess", "fc_weight", "fc_bias")}
    with pytest.raises(CamError, match=message):
        ModelInfo(**values, **changes)


def test_a_multilabel_model_without_thresholds_uses_the_default(tmp_path, tiny_onnx):
    info = CamSession(multilabel_copy(tiny_onnx, tmp_path / "m.onnx")).info
    assert info.thresholds == [DEFAULT_THRESHOLD] * len(info.labels)


def test_probabilities_are_the_sigmoid_and_positives_reach_their_thresholds(multilabel, thresholds, shape_images):
    results = multilabel.run(list(shape_images.images))
    counts = set()
    for result in results:
        expected = sigmoid64(result.logits)
        np.testing.assert_allclose(result.probs, expected, atol=1e-6)
        positive = [c for c in np.argsort(-expected, kind="stable") if expected[c] >= thresholds[c]]
        assert result.positives.tolist() == positive
        assert result.positive_labels == [multilabel.labels[c] for c in positive]
        # every positive is explained; an image with none explains its most probable class
        assert result.classes.tolist() == (positive or [int(np.argmax(expected))])
        assert result.cams_raw.shape[0] == result.boxes.shape[0] == len(result.labels) == len(result.classes)
        assert result.to_dict()["positive"] == result.positive_labels
        counts.add(len(positive))
    assert len(counts) > 1 and 0 in counts  # ragged, including an image with no positive class


def test_the_maps_of_a_multilabel_model_are_its_cams(multilabel, session, shape_images):
    """CAM is unchanged: sum_k w[c, k] f_k, whatever the activation."""
    images = list(shape_images.images)
    multi = multilabel.run(images)
    single = session.run(images, classes=np.stack([np.resize(r.classes, 5) for r in multi]))
    for m, s in zip(multi, single, strict=True):
        np.testing.assert_array_equal(m.cams_raw, s.cams_raw[: len(m.classes)])
        np.testing.assert_array_equal(m.boxes, s.boxes[: len(m.classes)])


def test_classes_and_topk_still_choose_for_a_multilabel_model(multilabel, shape_images):
    images = list(shape_images.images[:3])
    for result in multilabel.run(images, topk=2):
        assert result.classes.tolist() == np.argsort(-result.probs, kind="stable")[:2].tolist()
    for result in multilabel.run(images, classes=["star", "circle"]):
        assert result.labels == ["star", "circle"]


def test_a_softmax_model_explains_and_reports_its_top_class(session, shape_images):
    for result in session.run(list(shape_images.images[:4])):
        assert result.classes.tolist() == result.positives.tolist() == [int(np.argmax(result.logits))]
        assert result.probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_gapcam_run_reports_every_positive_finding(multilabel, shape_images, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from runtime.__main__ import predict

    for i, pixels in enumerate(shape_images.images[:4]):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    out = tmp_path / "out"
    outcome = CliRunner().invoke(predict, [str(multilabel.path), *(str(tmp_path / f"{i}.png") for i in range(4)), "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads((out / "results.json").read_text())
    assert summary["activation"] == "sigmoid" and summary["thresholds"] == pytest.approx(multilabel.info.thresholds)
    results = summary["results"]
    expected = multilabel.run([str(tmp_path / f"{i}.png") for i in range(4)])
    for entry, result in zip(results, expected, strict=True):
        assert entry["positive"] == result.positive_labels
        assert [e["label"] for e in entry["explained"]] == result.labels
    report = (out / "report.html").read_text()
    assert "multi-label" in report


def test_the_calibrated_threshold_has_the_best_f1_of_any():
    rng = np.random.default_rng(1)
    scores, truth = rng.random(300), rng.random(300) < 0.2

    def f1(threshold):
        made = scores >= threshold
        tp = (made & truth).sum()
        return 2 * tp / (made.sum() + truth.sum())

    best = best_f1_threshold(scores, truth)
    assert f1(best) == pytest.approx(max(f1(t) for t in scores))
    # halfway between two scores, never on one: a last-bit change of any probability keeps every decision
    assert best not in scores and np.abs(scores - best).min() > 1e-9
    assert f1(best) == f1(best + 1e-12) == f1(best - 1e-12)
    assert best_f1_threshold(scores, np.zeros(300, bool)) == 0.5  # no positive: the default


def test_metrics_per_class_and_their_means():
    probs = np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.6], [0.3, 0.1]])
    truth = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    metrics = multilabel_metrics(probs, truth, ["a", "b"], [0.5, 0.65])
    assert metrics["per_class"]["a"] == {"auroc": 1.0, "threshold": 0.5, "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert metrics["per_class"]["b"]["recall"] == 0.5 and metrics["per_class"]["b"]["precision"] == 1.0
    assert metrics["mean_auroc"] == pytest.approx(1.0) and metrics["exact_match"] == 0.75
    json.dumps(metrics, allow_nan=False)  # strict JSON: an undefined AUC is null, never NaN
    assert multilabel_metrics(probs, np.ones_like(truth), ["a", "b"], [0.5, 0.5])["per_class"]["a"]["auroc"] is None


def test_metrics_refuse_thresholds_that_do_not_fit_in_one_line():
    with pytest.raises(CamError, match=r"2 class names and 1 thresholds do not fit"):
        multilabel_metrics(np.zeros((3, 2)), np.zeros((3, 2)), ["a", "b"], [0.5])


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_reciprocam_of_a_multilabel_model_reads_each_class_on_its_own(tmp_path, tiny_onnx, shape_images, activation):
    """ReciproCAM's map of a class is the model's probability of it for each masked feature position:
    for a multi-label model (sigmoid) another class's weights cannot change it; softmax couples them."""
    path = multilabel_copy(tiny_onnx, tmp_path / "m.onnx") if activation == "sigmoid" else tiny_onnx
    image = shape_images.images[0]
    before = CamSession(path).run(image, classes=[0], method="reciprocam")[0].cams_raw
    changed = CamSession(path)
    changed.info.fc_weight[1] *= 3.0  # another class's weights, in the metadata the tail is computed from
    after = changed.run(image, classes=[0], method="reciprocam")[0].cams_raw
    assert np.array_equal(before, after) == (activation == "sigmoid")

"""Faithfulness metrics (runtime.evaluation.faithfulness, .perturbation): hand-worked cases, the
tiny model end to end, the CLI, and (slow tier) the peers' own code on the torch model: pytorch-grad-cam's
ROAD and confidence drop/increase, torchcam's Average Drop/Increase and deletion/insertion."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from runtime import CamError
from runtime.evaluation.datasets import ImageSet, image_folder, read_images
from runtime.evaluation.faithfulness import (
    FaithfulnessSettings,
    evaluate_faithfulness,
    explained_maps,
    parse_percentiles,
    perturbation_scores,
    pointing_hits,
    step_counts,
)
from runtime.evaluation.perturbation import gaussian_blur, kept_count, linear_imputation, removal_masks
from runtime.evaluation.shapes import CLASSES
from runtime.maps.forward import batched_logits

FAST = FaithfulnessSettings(percentiles=(20, 80), steps=4, batch_size=16)  # few perturbations: the end-to-end tests stay fast


def tie_free_map(shape, seed=0):
    return np.random.default_rng(seed).random(shape)


@pytest.mark.parametrize("shape", [(64, 64), (7, 9)])
def test_road_keeps_what_numpys_percentile_keeps(shape):
    """pytorch-grad-cam keeps the pixels below np.percentile(map, 100 - p); so does kept_count, for any map."""
    relevance = tie_free_map(shape)
    for removed in (10, 12.5, 20, 40, 50, 60, 80, 90):
        kept = int((relevance < np.percentile(relevance, 100 - removed)).sum())
        assert kept_count(relevance.size, removed) == kept
        morf, lerf = removal_masks(relevance, [removed], True)[0], removal_masks(relevance, [removed], False)[0]
        assert (~morf).sum() == (~lerf).sum() == kept
        assert relevance[~morf].max() < relevance[morf].min()  # MoRF removes the most relevant
        assert relevance[~lerf].min() > relevance[lerf].max()  # LeRF the least
    constant = removal_masks(np.zeros(shape), [50], True)[0]  # ties: still exactly that many, by pixel order
    assert (~constant).sum() == kept_count(constant.size, 50)


def test_imputation_is_the_neighbours_weighted_mean():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(2, 7, 9)).astype(np.float32)
    removed = np.stack([rng.random((7, 9)) < 0.6, np.arange(63).reshape(7, 9) >= 5])  # scattered; all but 5 pixels
    filled = linear_imputation(image, removed, 0.0, rng)
    assert filled.shape == (2, 2, 7, 9) and filled.dtype == np.float32
    weights = {(dy, dx): 1 / 6 if 0 in (dy, dx) else 1 / 12 for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)}
    for mask, out in zip(removed, filled, strict=True):
        np.testing.assert_array_equal(out[:, ~mask], image[:, ~mask])  # kept pixels untouched
        for y, x in zip(*np.nonzero(mask), strict=True):
            near = [(y + dy, x + dx, w) for (dy, dx), w in weights.items() if 0 <= y + dy < 7 and 0 <= x + dx < 9]
            mean = sum(w * out[:, yy, xx] for yy, xx, w in near) / sum(w for _, _, w in near)
            np.testing.assert_allclose(out[:, y, x], mean, atol=1e-5)
    noisy = linear_imputation(image, removed, 0.5, np.random.default_rng(2))
    np.testing.assert_array_equal(noisy, linear_imputation(image, removed, 0.5, np.random.default_rng(2)))  # seeded
    added = noisy - filled
    for mask, change in zip(removed, added, strict=True):
        np.testing.assert_array_equal(change[:, ~mask], 0.0)
    drawn = np.concatenate([added[s][:, removed[s]].ravel() for s in range(2)])
    assert abs(drawn.std() - 0.5) < 0.05 and abs(drawn.mean()) < 0.05  # N(0, noise^2) on removed values only


def direct_imputation(image, removed):
    """The imputation's linear system, written out densely and solved in float64 (numpy's LAPACK)."""
    height, width = removed.shape
    index = -np.ones((height, width), int)
    index[removed] = np.arange(removed.sum())
    system, known = np.zeros((removed.sum(),) * 2), np.zeros((removed.sum(), len(image)))
    for y, x in zip(*np.nonzero(removed), strict=True):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx, weight = y + dy, x + dx, 1 / 6 if 0 in (dy, dx) else 1 / 12
                if (dy, dx) == (0, 0) or not (0 <= yy < height and 0 <= xx < width):
                    continue
                system[index[y, x], index[y, x]] += weight
                if removed[yy, xx]:
                    system[index[y, x], index[yy, xx]] -= weight
                else:
                    known[index[y, x]] += weight * image[:, yy, xx]
    filled = np.array(image, np.float64)
    filled[:, removed] = np.linalg.solve(system, known).T
    return filled


@pytest.mark.parametrize(
    ("shape", "tolerance"),
    [((33, 47), 1e-5), ((40, 40), 1e-5), ((6, 90), 1e-4)],  # a strip filled from its one kept end is ill-conditioned: float32's floor
)
def test_imputation_equals_a_direct_solve(shape, tolerance):
    """Large holes (the V-cycle's coarse grids at work), scattered ones, all but the top row, none: odd, even and elongated sizes."""
    rng = np.random.default_rng(4)
    image = rng.normal(size=(3, *shape)).astype(np.float32)
    relevance = tie_free_map(shape, 5)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blob = (yy - 12) ** 2 + (xx - 20) ** 2 < 150
    removed = np.stack([blob, ~blob, removal_masks(relevance, [90], True)[0], rng.random(shape) < 0.3, yy > 0])
    filled = linear_imputation(image, np.concatenate([removed, np.zeros((1, *shape), bool)]), 0.0, rng)
    for mask, out in zip(removed, filled, strict=False):
        np.testing.assert_allclose(out, direct_imputation(image, mask), atol=tolerance)
    np.testing.assert_array_equal(filled[-1], image)  # nothing removed: nothing changes


def test_blur_keeps_a_constant_and_smooths_an_edge():
    np.testing.assert_allclose(gaussian_blur(np.full((1, 12, 12), 3.0)), 3.0, rtol=1e-6)
    step = np.zeros((1, 12, 12))
    step[:, :, 6:] = 1.0
    blurred = gaussian_blur(step)
    assert np.all(np.diff(blurred[0, 0]) >= 0) and 0.0 < blurred[0, 0, 5] < 0.5 < blurred[0, 0, 6] < 1.0


def test_batched_logits_regroups_any_chunks_into_full_batches():
    calls = []

    def forward(batch):
        calls.append(len(batch))
        return batch.reshape(len(batch), -1)[:, :2].astype(np.float32)

    chunks = [np.full((m, 1, 1, 2), m, np.float32) for m in (3, 70, 0, 1)]
    logits = batched_logits(forward, iter(chunks), 32)
    assert calls == [32, 32, 10]
    np.testing.assert_array_equal(logits, np.concatenate(chunks).reshape(-1, 2))
    with pytest.raises(CamError, match="no inputs"):
        batched_logits(forward, iter([]), 8)


def mean_model(batch):
    """Two classes whose logit gap is the input's mean: every probability can be worked out."""
    return np.stack([batch.mean(axis=(1, 2, 3)), np.zeros(len(batch))], axis=1).astype(np.float32)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_perturbation_scores_by_hand():
    rng = np.random.default_rng(3)
    inputs = rng.normal(1.0, 0.5, size=(3, 2, 6, 5)).astype(np.float32)
    relevance = np.stack([tie_free_map((6, 5), seed) for seed in range(3)])
    calls = []

    def forward(batch):
        calls.append(len(batch))
        return mean_model(batch)

    settings = FaithfulnessSettings(percentiles=(20, 50, 80), noise=0.0, steps=4, batch_size=16)
    scores = perturbation_scores(forward, inputs, relevance, np.array([0, 0, 1]), settings, [0, 1, 2])
    per_image = 1 + 2 * 3 + 1 + 1 + 2 * (len(step_counts(30, 4)) - 2)
    assert sum(calls) == 3 * per_image and max(calls) == 16 and len(calls) == -(-3 * per_image // 16)  # batched, never one by one
    y = sigmoid(inputs.mean(axis=(1, 2, 3)))
    y[2] = 1 - y[2]  # image 2 explains class 1
    np.testing.assert_allclose(scores.original, y, rtol=1e-6)
    masked = sigmoid((inputs * relevance[:, None]).mean(axis=(1, 2, 3)))
    masked[2] = 1 - masked[2]
    np.testing.assert_allclose(scores.masked, masked, rtol=1e-6)
    np.testing.assert_allclose(scores.average_drop, np.maximum(y - masked, 0) / (y + 1e-7), rtol=1e-6)
    np.testing.assert_array_equal(scores.increase, masked > y)
    np.testing.assert_array_equal(step_counts(30, 4), [0, 8, 16, 24, 30])  # torchcam's steps: ceil(30 / 4) pixels each
    np.testing.assert_allclose(scores.fractions, [0, 8 / 30, 16 / 30, 24 / 30, 1])
    np.testing.assert_array_equal(scores.deletion[:, 0], scores.original)
    np.testing.assert_array_equal(scores.insertion[:, -1], scores.original)
    np.testing.assert_allclose(scores.deletion[:, -1], [0.5, 0.5, 0.5])  # all pixels at the zero baseline: logit gap 0
    np.testing.assert_allclose(scores.insertion[:, 0], [0.5, 0.5, 0.5])
    top = np.argsort(-relevance[0].ravel(), kind="stable")[:8]
    deleted = inputs[0].reshape(2, -1).copy()
    deleted[:, top] = 0.0
    assert scores.deletion[0, 1] == pytest.approx(sigmoid(deleted.mean()), rel=1e-6)
    width = np.diff(scores.fractions)
    np.testing.assert_allclose(scores.deletion_auc, ((scores.deletion[:, 1:] + scores.deletion[:, :-1]) / 2 * width).sum(1))
    np.testing.assert_allclose(scores.road_combined, ((scores.lerf - scores.morf) / 2).mean(axis=1))


def test_settings_and_percentiles_are_checked():
    assert parse_percentiles("10,20.5, 90") == (10, 20.5, 90)
    for bad in ("10,abc", "", "10,,20"):
        with pytest.raises(CamError, match="--percentiles must be"):
            parse_percentiles(bad)
    for field, value in [("percentiles", (0, 50)), ("percentiles", (50, 100)), ("percentiles", ()), ("percentiles", (20, 20))]:
        with pytest.raises(CamError, match=f"--{field} must be"):
            FaithfulnessSettings(**{field: value})
    for field, value in [("noise", -1.0), ("steps", 0), ("baseline", "noise"), ("batch_size", 0)]:
        with pytest.raises(CamError, match=f"--{field.replace('_', '-')} must be"):
            FaithfulnessSettings(**{field: value})


def test_pointing_game_by_hand():
    cam = np.zeros((10, 12))
    cam[4, 7] = 1.0
    assert pointing_hits(cam, np.array([[6, 3, 8, 5]]))
    assert not pointing_hits(cam, np.array([[0, 0, 7, 10], [8, 0, 12, 10]]))  # end-exclusive: x 7 is outside the first box
    assert not pointing_hits(np.zeros((10, 12)), np.array([[0, 0, 12, 10]]))  # a constant map points nowhere


def test_every_method_on_the_tiny_model(session):
    data = read_images("shapes", session.labels, 4, 0, 64)
    metrics = evaluate_faithfulness(session, data, ["cam", "scorecam", "reciprocam"], FAST)
    assert metrics["images"] == 4 and metrics["explained"] == "true class" and metrics["settings"]["percentiles"] == [20, 80]
    for values in metrics["methods"].values():
        assert len(values["road_morf"]["mean"]) == 2 and len(values["deletion"]["mean"]) == len(values["fractions"]) == 5
        assert 0.0 <= values["average_drop"]["mean"] <= 1.0 and 0.0 <= values["pointing_game"] <= 1.0
        assert -0.5 <= values["road_combined"]["mean"] <= 0.5 and 0.0 <= values["insertion_auc"]["mean"] <= 1.0
    alone = evaluate_faithfulness(session, data, ["cam"], FAST)["methods"]["cam"]
    assert alone["road_combined"] == metrics["methods"]["cam"]["road_combined"]  # the noise does not depend on the other methods
    blurred = evaluate_faithfulness(session, data, ["cam"], FaithfulnessSettings(percentiles=(50,), steps=4, baseline="blur"))
    assert blurred["methods"]["cam"]["insertion"]["mean"][0] != alone["insertion"]["mean"][0]
    with pytest.raises(CamError, match="method must be one of"):
        evaluate_faithfulness(session, data, ["lime"], FAST)
    with pytest.raises(CamError, match="at least 2"):
        evaluate_faithfulness(session, ImageSet(data.names[:1], data.images[:1], None, None), ["cam"], FAST)


@pytest.fixture()
def plain_folder(tmp_path, shape_images):
    """Three images in class folders named for the shapes labels, and two bare images elsewhere."""
    for i in range(3):
        path = tmp_path / "labelled" / CLASSES[shape_images.labels[i]] / f"im{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(shape_images.images[i]).save(path)
    for i in (3, 4):
        (tmp_path / "bare" / "holiday").mkdir(parents=True, exist_ok=True)
        Image.fromarray(shape_images.images[i]).save(tmp_path / "bare" / "holiday" / f"im{i}.png")
    return tmp_path


def test_image_folders_label_by_class_folder_or_not_at_all(plain_folder, shape_images):
    labelled = image_folder(plain_folder / "labelled", CLASSES)
    assert labelled.labels.tolist() == sorted(shape_images.labels[:3].tolist(), key=lambda c: CLASSES[c]) and labelled.boxes is None
    assert image_folder(plain_folder / "bare", CLASSES).labels is None
    Image.fromarray(shape_images.images[0]).save(plain_folder / "labelled" / "loose.png")
    with pytest.raises(CamError, match=r"images in \['\(the folder itself\)'\] are not in folders named for the model's labels"):
        image_folder(plain_folder / "labelled", CLASSES)
    (plain_folder / "empty").mkdir()
    with pytest.raises(CamError, match="empty: no image files"):
        read_images(str(plain_folder / "empty"), CLASSES, 1, 0, 64)
    with pytest.raises(CamError, match="not `shapes` and not a folder of images"):
        read_images(str(plain_folder / "nowhere"), CLASSES, 1, 0, 64)


def test_faithfulness_command(tiny_onnx, plain_folder):
    from runtime.__main__ import main

    def run(*args):
        return CliRunner().invoke(main, ["faithfulness", str(tiny_onnx), *map(str, args)])

    out = plain_folder / "out"
    done = run(plain_folder / "bare", "--out", out, "--method", "cam", "--method", "reciprocam", "--percentiles", "50", "--steps", "4")
    assert done.exit_code == 0, done.output
    assert "reciprocam" in done.output and "predicted class explained" in done.output
    report = json.loads((out / "faithfulness.json").read_text())
    assert list(report["methods"]) == ["cam", "reciprocam"] and report["methods"]["cam"]["pointing_game"] is None
    assert set(report["definitions"]) >= {"road_combined", "average_drop", "deletion_auc", "pointing_game"}
    assert Image.open(out / "faithfulness.png").size == (1440, 880)
    for args, message in [
        ((plain_folder / "bare", "--percentiles", "50,120"), "--percentiles must be"),
        ((plain_folder / "bare", "--method", "lime"), "Invalid value for '--method'"),
        ((plain_folder / "nowhere",), "not `shapes` and not a folder of images"),
        (("shapes", "--count", "1"), "at least 2"),
    ]:
        failed = run(*args, "--out", plain_folder / "bad")
        assert failed.exit_code != 0 and message in failed.output, failed.output
    assert not (plain_folder / "bad").exists()


def test_eval_adds_faithfulness_on_request(tiny_onnx, tmp_path):
    from runtime.__main__ import main

    done = CliRunner().invoke(main, ["eval", str(tiny_onnx), "shapes", "--count", "3", "--out", str(tmp_path), "--faithfulness"])
    assert done.exit_code == 0, done.output
    assert "ROAD-combined" in done.output and (tmp_path / "faithfulness.png").is_file()
    report = json.loads((tmp_path / "faithfulness.json").read_text())
    assert list(report["methods"]) == ["cam"] and report["images"] == 3 and report["methods"]["cam"]["pointing_game"] is not None


def curves_in(page):
    """Each card's curves as report.html draws them: {"fractions", "deletion", "insertion": numbers, "chart": the SVG}."""
    found = []
    for chart in re.findall(r'<svg class="curves".*?</svg>', page):
        numbers = dict(re.findall(r'class="(deletion|insertion)"[^>]*data-values="([^"]*)"', chart))
        numbers["fractions"] = re.search(r'data-fractions="([^"]*)"', chart).group(1)
        found.append({key: [float(v) for v in text.split(",")] for key, text in numbers.items()} | {"chart": chart})
    return found


def test_folder_report_draws_each_images_deletion_curves(tiny_onnx, session, shape_images, tmp_path):
    """--deletion-curves: each card's curves are faithfulness's own (perturbation_scores), per image, in batches; off by default."""
    from runtime.__main__ import main

    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.fromarray(shape_images.images[i]).save(tmp_path / "images" / f"s{i}.png")
    args = [str(tiny_onnx), str(tmp_path / "images"), "--method", "reciprocam", "--batch-size", "2"]
    done = CliRunner().invoke(main, ["predict", *args, "--out", str(tmp_path / "curves"), "--deletion-curves"])
    assert done.exit_code == 0, done.output
    drawn = curves_in((tmp_path / "curves" / "report.html").read_text())
    records = [json.loads(line) for line in (tmp_path / "curves" / "results.jsonl").read_text().splitlines()]
    pictures = [Image.open(tmp_path / "images" / record["file"].rpartition("/")[2]) for record in records]
    results = session.run(pictures, method="reciprocam")
    maps, classes = explained_maps(results, session.input_size), np.array([r.classes[0] for r in results])
    scores = perturbation_scores(session.logits, session.to_batch(pictures), maps, classes, FaithfulnessSettings(), range(3))
    assert len(drawn) == len(records) == 3
    for i, (chart, record) in enumerate(zip(drawn, records, strict=True)):
        for kind in ("deletion", "insertion"):
            np.testing.assert_allclose(chart[kind], getattr(scores, kind)[i], atol=1e-5)
            np.testing.assert_allclose(record["curves"][kind], getattr(scores, kind)[i], atol=1e-5)
        np.testing.assert_allclose(chart["fractions"], scores.fractions, atol=1e-6)
        assert (
            f"deletion AUC {scores.deletion_auc[i]:.3f}" in chart["chart"]
            and f"insertion AUC {scores.insertion_auc[i]:.3f}" in chart["chart"]
        )
    assert json.loads((tmp_path / "curves" / "results.json").read_text())["curves"] == {"steps": 20, "baseline": "constant"}
    plain = CliRunner().invoke(main, ["predict", *args, "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    assert not curves_in((tmp_path / "plain" / "report.html").read_text())
    assert "curves" not in (tmp_path / "plain" / "results.jsonl").read_text()


def test_deletion_curves_refuse_faces_and_runs_without_images(tiny_onnx, tmp_path):
    from runtime.__main__ import main

    (tmp_path / "clip.mp4").write_bytes(b"never opened: refused before")
    for args, message in [
        (["--faces", str(tmp_path / "clip.mp4")], "--deletion-curves perturbs whole model inputs, not the faces found in photos"),
        ([str(tmp_path / "clip.mp4")], "--deletion-curves draws in report.html's image cards, and this run has no images"),
        (["--camera", "0"], "this run has no images"),
    ]:
        failed = CliRunner().invoke(main, ["predict", str(tiny_onnx), *args, "--deletion-curves", "--out", str(tmp_path / "out")])
        assert failed.exit_code != 0 and message in failed.output, failed.output
        assert len(failed.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def torch_setup(exported_session, tiny_model, shape_images, count=4):
    """The same inputs, explained classes and [0, 1] maps at input size for gapcam and the peers, and
    the torch model as the peers take it (its logits only)."""
    import torch

    from runtime.maps.cam import normalize_maps, upsample_bilinear
    from test_methods import LogitsOnly

    images = list(shape_images.images[:count])
    results = exported_session.run(images, classes=shape_images.labels[:count, None], method="cam")
    saliency = normalize_maps(upsample_bilinear(np.stack([r.cams_raw[0] for r in results]), exported_session.input_size))
    inputs = exported_session.to_batch(images)
    return inputs, saliency, shape_images.labels[:count], LogitsOnly(tiny_model).eval(), torch.from_numpy(inputs)


def test_road_equals_pytorch_grad_cams(exported_session, tiny_model, shape_images, monkeypatch):
    """Without noise, pytorch-grad-cam's ROAD (its percentile: the share kept) gives our probabilities
    within 1e-4 (its sparse direct solve against our conjugate gradients); ROADCombined our combined."""
    from pytorch_grad_cam.metrics import road
    from pytorch_grad_cam.metrics.perturbation_confidence import PerturbationConfidenceMetric
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    inputs, saliency, labels, model, x = torch_setup(exported_session, tiny_model, shape_images, count=2)
    settings = FaithfulnessSettings(percentiles=(10, 50, 90), noise=0.0)  # kept_count's test covers the other percentiles
    ours = perturbation_scores(exported_session.logits, inputs, saliency, labels, settings, range(len(labels)))
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in labels]
    for j, removed in enumerate(settings.percentiles):
        for order, mine in ((road.RemoveMostRelevantFirst, ours.morf), (road.RemoveLeastRelevantFirst, ours.lerf)):
            metric = PerturbationConfidenceMetric(order(100 - removed, road.NoisyLinearImputer(noise=0.0)))
            theirs = metric(x, saliency, targets, model, return_diff=False)
            np.testing.assert_allclose(mine[:, j], theirs, atol=1e-4)
    monkeypatch.setattr(
        road.NoisyLinearImputer.__init__, "__defaults__", (0.0, road.neighbors_weights)
    )  # ROADCombined's imputer, noiseless
    combined = road.ROADCombined(percentiles=list(settings.percentiles))(x, saliency, targets, model)
    np.testing.assert_allclose(ours.road_combined, combined, atol=1e-4)


def test_road_noise_is_pytorch_grad_cams(exported_session, tiny_model, shape_images):
    """With the noise (0.01 per imputed value, drawn by numpy here and by torch there), ROAD-combined
    agrees with pytorch-grad-cam's within 0.02 per image."""
    import torch
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    inputs, saliency, labels, model, x = torch_setup(exported_session, tiny_model, shape_images, count=2)
    ours = perturbation_scores(exported_session.logits, inputs, saliency, labels, FaithfulnessSettings(), range(len(labels)))
    torch.manual_seed(0)
    theirs = ROADCombined()(x, saliency, [ClassifierOutputSoftmaxTarget(int(c)) for c in labels], model)
    np.testing.assert_allclose(ours.road_combined, theirs, atol=0.02)


class StubExtractor:
    """torchcam's CAM extractor protocol, answering with given maps at input size (torchcam's resize is then the identity)."""

    def __init__(self, model, maps):
        import torch

        self.model, self.maps = model, torch.from_numpy(maps.astype(np.float32))

    def __call__(self, class_idx=None, scores=None, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        import contextlib

        return contextlib.nullcontext()


def test_confidence_drop_and_increase_equal_the_peers(exported_session, tiny_model, shape_images):
    """torchcam's Average Drop / Increase exactly (same epsilon); pytorch-grad-cam's DropInConfidence
    is the drop before dividing by y, its IncreaseInConfidence the same 0/1 per image."""
    import functools

    import torch
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    from torchcam.metrics import ClassificationMetric

    inputs, saliency, labels, model, x = torch_setup(exported_session, tiny_model, shape_images)
    ours = perturbation_scores(exported_session.logits, inputs, saliency, labels, FaithfulnessSettings(), range(len(labels)))
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in labels]
    np.testing.assert_allclose(ours.average_drop * (ours.original + 1e-7), DropInConfidence()(x, saliency, targets, model), atol=1e-6)
    np.testing.assert_array_equal(ours.increase, IncreaseInConfidence()(x, saliency, targets, model) > 0)
    metric = ClassificationMetric(StubExtractor(model, saliency), functools.partial(torch.softmax, dim=-1))
    metric.update(x, class_idx=[int(c) for c in labels])
    summary = metric.summary()
    assert summary["avg_drop"] == pytest.approx(ours.average_drop.mean(), abs=1e-6)
    assert summary["conf_increase"] == pytest.approx(ours.increase.mean())


@pytest.mark.parametrize("baseline", ["constant", "blur"])
def test_deletion_and_insertion_equal_torchcams(exported_session, tiny_model, shape_images, baseline):
    """torchcam's DeletionInsertionMetric, given our baseline (zeros is its default), gives our mean AUCs."""
    import functools

    import torch
    from torchcam.metrics import DeletionInsertionMetric

    from runtime.evaluation.faithfulness import baseline_of

    inputs, saliency, labels, model, x = torch_setup(exported_session, tiny_model, shape_images)
    settings = FaithfulnessSettings(baseline=baseline)
    ours = perturbation_scores(exported_session.logits, inputs, saliency, labels, settings, range(len(labels)))
    base = torch.from_numpy(np.stack([baseline_of(image, baseline) for image in inputs]))
    metric = DeletionInsertionMetric(StubExtractor(model, saliency), functools.partial(torch.softmax, dim=-1), steps=20, baseline=base)
    metric.update(x, class_idx=[int(c) for c in labels])
    summary = metric.summary()
    assert summary["deletion_auc"] == pytest.approx(ours.deletion_auc.mean(), abs=1e-5)
    assert summary["insertion_auc"] == pytest.approx(ours.insertion_auc.mean(), abs=1e-5)

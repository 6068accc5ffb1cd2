"""train: the GAP-CAM model, the shapes dataset, checkpoints and exact resume."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from runtime.evaluation.shapes import CLASSES, render_sample, render_split
from train import TrainError, load_checkpoint, load_trained
from train.loop import TrainConfig, fit, last_path, resume
from train.models import Architecture, GapCam


@pytest.mark.parametrize("backbone,size", [("small_cnn", 48), ("resnet18", 64)])
@pytest.mark.parametrize("pool", ["gap", "gmp"])
def test_features_are_what_pooling_reduces(backbone, size, pool):
    torch.manual_seed(0)
    model = GapCam(Architecture(backbone=backbone, in_channels=1, num_classes=7, cam_channels=24, pool=pool)).eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        logits, features = model(x)
        pooled = features.mean((2, 3)) if pool == "gap" else features.amax((2, 3))
        torch.testing.assert_close(logits, model.fc(pooled))
    assert features.shape[1] == 24 and (features >= 0).all()  # after the CAM conv's ReLU
    assert isinstance(model.fc, torch.nn.Linear)


def test_default_cam_width_is_the_papers_1024():
    assert Architecture().cam_channels == 1024


def test_shapes_are_seeded_with_true_boxes_and_masks():
    a, b = render_sample(3, "train", 11), render_sample(3, "train", 11)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], render_sample(3, "val", 11)[0])
    data = render_split(50, seed=0, split="train")
    assert data.images.shape == (50, 64, 64, 3) and set(data.labels) <= set(range(len(CLASSES)))
    assert len(set(data.labels.tolist())) == len(CLASSES)
    for box, mask in zip(data.boxes, data.masks, strict=True):
        rows, cols = np.nonzero(mask)
        assert tuple(box) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        assert 10 <= box[2] - box[0] <= 40


def test_checkpoint_is_self_describing_and_weights_only(tiny_checkpoint):
    raw = torch.load(tiny_checkpoint, weights_only=True)
    assert raw["format"] == "gapcam-checkpoint" and raw["format_version"] == 1
    assert raw["labels"] == list(CLASSES)
    assert raw["preprocess"]["height"] == 64 and raw["architecture"]["cam_channels"] == 32
    assert raw["provenance"]["seed"] == 0 and raw["provenance"]["data_fingerprint"]
    assert {"optimizer", "scheduler", "rng", "epoch", "history"} <= set(raw["training"])
    model, checkpoint, preprocess = load_trained(tiny_checkpoint)
    assert not model.training and checkpoint.labels == list(CLASSES) and preprocess.size == (64, 64)
    assert last_path(tiny_checkpoint).exists()


def test_bad_checkpoints_are_refused(tmp_path, tiny_checkpoint):
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(TrainError, match="text.pt: not a readable gapcam checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(TrainError, match="other.pt: not a gapcam checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    raw = torch.load(tiny_checkpoint, weights_only=True)
    raw["format_version"] = 99
    torch.save(raw, tmp_path / "future.pt")
    with pytest.raises(TrainError, match="version 99 is not supported"):
        load_checkpoint(tmp_path / "future.pt")
    with pytest.raises(TrainError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    wrong = dict(raw, format_version=1, labels="circle")
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(TrainError, match="wrong.pt: checkpoint field 'labels' has type str"):
        load_checkpoint(tmp_path / "wrong.pt")
    torch.save({k: v for k, v in raw.items() if k != "model"} | {"format_version": 1}, tmp_path / "nomodel.pt")
    with pytest.raises(TrainError, match=r"lacks \['model'\]"):
        load_checkpoint(tmp_path / "nomodel.pt")


def test_checkpoint_keys_are_defined_once():
    """Every key of the dataclass has a type check on load, and nothing else does."""
    from train.checkpoint import KEYS, KINDS, REQUIRED

    assert set(KINDS) == set(KEYS)
    assert set(REQUIRED) == {"architecture", "labels", "preprocess", "provenance", "model"}


def test_two_epochs_equal_one_plus_resume(tmp_path):
    settings = {"recipe": "shapes", "samples": 96, "epochs": 2, "batch_size": 32, "cam_channels": 16}
    fit(TrainConfig(out=str(tmp_path / "straight.pt"), **settings), log=lambda s: None)
    fit(TrainConfig(out=str(tmp_path / "split.pt"), stop_after=1, **settings), log=lambda s: None)
    assert load_checkpoint(last_path(tmp_path / "split.pt")).training.epoch == 1
    resume(last_path(tmp_path / "split.pt"), log=lambda s: None)
    straight = load_checkpoint(last_path(tmp_path / "straight.pt"))
    resumed = load_checkpoint(last_path(tmp_path / "split.pt"))
    assert resumed.training.epoch == 2
    for key, value in straight.model.items():
        assert torch.equal(value, resumed.model[key]), key
    assert straight.training.history[-1]["val_loss"] == resumed.training.history[-1]["val_loss"]


def test_resume_refuses_another_recipe_and_a_weights_only_file(tmp_path, tiny_checkpoint):
    with pytest.raises(TrainError, match="not 'fer'"):
        resume(tiny_checkpoint, log=lambda s: None, recipe="fer")
    raw = torch.load(tiny_checkpoint, weights_only=True)
    del raw["training"]
    torch.save(raw, tmp_path / "bare.pt")
    with pytest.raises(TrainError, match="no training state"):
        resume(tmp_path / "bare.pt", log=lambda s: None)


def test_a_diverging_run_stops_with_one_line_and_saves_nothing(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "train",
            "shapes",
            "--lr",
            "1e6",
            "--samples",
            "64",
            "--epochs",
            "2",
            "--cam-channels",
            "8",
            "--out",
            str(tmp_path / "nan.pt"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "training diverged at epoch 1" in done.stderr and "no epoch finished, so nothing was saved" in done.stderr
    assert not (tmp_path / "nan.pt").exists()


def test_divergence_after_a_good_epoch_keeps_the_good_checkpoints(tmp_path, monkeypatch):
    import train.loop

    real, calls = train.loop.F.cross_entropy, [0]

    def nan_in_epoch_two(*args, **kwargs):
        loss = real(*args, **kwargs)
        if kwargs.get("reduction") == "sum":  # validation's loss stays true
            return loss
        calls[0] += 1
        return loss * float("nan") if calls[0] > 2 else loss  # 64 images, batch 32: two batches an epoch

    monkeypatch.setattr(train.loop.F, "cross_entropy", nan_in_epoch_two)
    with pytest.raises(
        TrainError, match=r"diverged at epoch 2, batch 1: the training loss is nan.*last good checkpoint is .*nan2.last.pt, after epoch 1"
    ):
        fit(
            TrainConfig(recipe="shapes", out=str(tmp_path / "nan2.pt"), samples=64, epochs=3, batch_size=32, cam_channels=8),
            log=lambda s: None,
        )
    best = load_checkpoint(tmp_path / "nan2.pt")
    assert best.box_threshold is not None  # the best checkpoint is calibrated however the run ends
    assert best.training.epoch == 1 and all(torch.isfinite(v).all() for v in best.model.values() if v.is_floating_point())


def test_checkpoint_fields_of_the_wrong_kind_are_one_line_errors(tiny_checkpoint, tmp_path):
    from export import ExportError, export_checkpoint

    raw = torch.load(tiny_checkpoint, weights_only=True)
    torch.save({**raw, "architecture": {"backbone": "small_cnn", "cam_channels": "many"}}, tmp_path / "arch.pt")
    with pytest.raises(ExportError, match=r"arch.pt: checkpoint field 'architecture' is malformed"):
        export_checkpoint(tmp_path / "arch.pt")
    broken = {**raw, "training": {**raw["training"], "optimizer": {"state": {}, "param_groups": []}}}
    torch.save(broken, tmp_path / "opt.pt")
    with pytest.raises(TrainError, match="training state does not fit this run"):
        resume(tmp_path / "opt.pt", log=lambda s: None)


def test_the_best_checkpoint_is_written_once_already_calibrated(tmp_path, monkeypatch):
    """The loop keeps the best epoch's checkpoint and writes it once, with its box threshold, when the
    run ends (it used to write it at each improvement, then read it back to calibrate and write again)."""
    import train.loop

    written = []
    real = train.loop.save_checkpoint
    monkeypatch.setattr(train.loop, "save_checkpoint", lambda path, checkpoint: (written.append(path), real(path, checkpoint)))
    out = tmp_path / "once.pt"
    fit(TrainConfig(recipe="shapes", out=str(out), samples=96, epochs=3, batch_size=32, cam_channels=16), log=lambda s: None)
    assert [p for p in written if p == out] == [out] and written.count(last_path(out)) == 3
    best, latest = load_checkpoint(out), load_checkpoint(last_path(out))
    assert best.box_threshold is not None and best.localization["val_images_with_boxes"] > 0
    accuracies = [row["val_accuracy"] for row in latest.training.history]
    assert best.training.epoch == accuracies.index(max(accuracies)) + 1 == best.provenance.epochs
    assert best.training.history == latest.training.history[: best.training.epoch]  # the best epoch's own state, not the last's
    assert best.training.best_accuracy == max(accuracies)


def test_an_interrupted_run_keeps_its_best_checkpoint(tmp_path, monkeypatch):
    import train.loop

    real, calls = train.loop.train_one_epoch, [0]

    def interrupted_in_epoch_two(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train.loop, "train_one_epoch", interrupted_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        fit(
            TrainConfig(recipe="shapes", out=str(tmp_path / "stop.pt"), samples=64, epochs=3, batch_size=32, cam_channels=8),
            log=lambda s: None,
        )
    best = load_checkpoint(tmp_path / "stop.pt")
    assert best.training.epoch == 1 and best.box_threshold is not None


def test_sigterm_keeps_the_best_checkpoint_and_the_previous_handler(tmp_path, monkeypatch):
    """A scheduler's preemption (SIGTERM) ends training as Ctrl-C does: the best epoch is written."""
    import os
    import signal

    import train.loop

    real, calls = train.loop.train_one_epoch, [0]

    def preempted_in_epoch_two(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(train.loop, "train_one_epoch", preempted_in_epoch_two)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        fit(
            TrainConfig(recipe="shapes", out=str(tmp_path / "pre.pt"), samples=64, epochs=3, batch_size=32, cam_channels=8),
            log=lambda s: None,
        )
    assert signal.getsignal(signal.SIGTERM) is before
    assert load_checkpoint(tmp_path / "pre.pt").training.epoch == 1


def test_a_resumed_run_without_improvement_whose_best_file_is_gone_says_so(tmp_path, monkeypatch):
    import train.loop

    out = tmp_path / "r.pt"
    accuracies = iter([0.5, 0.3, 0.1])  # epoch 1 is the best; the latest checkpoint holds epoch 2's weights
    monkeypatch.setattr(train.loop, "validation_metrics", lambda goal, logits, labels: {"loss": 1.0, "accuracy": next(accuracies)})
    fit(TrainConfig(recipe="shapes", out=str(out), samples=64, epochs=2, batch_size=32, cam_channels=8), log=lambda s: None)
    out.unlink()  # lost, as after a SIGKILL before the run ended
    with pytest.raises(
        TrainError, match=r"no best checkpoint: no epoch of this run beat .*0\.500.* the latest checkpoint is .*r\.last\.pt"
    ):
        resume(last_path(out), log=lambda s: None, epochs=3)


def test_a_run_resumed_from_its_best_into_a_new_file_writes_it(tmp_path, monkeypatch):
    """Resuming a best checkpoint (its weights are the run's best) into another --out: when no epoch
    improves, the resumed weights are the best checkpoint, calibrated."""
    import train.loop

    first, again = tmp_path / "a.pt", tmp_path / "b.pt"
    fit(TrainConfig(recipe="shapes", out=str(first), samples=64, epochs=1, batch_size=32, cam_channels=8), log=lambda s: None)
    monkeypatch.setattr(train.loop, "validation_metrics", lambda goal, logits, labels: {"loss": 1.0, "accuracy": 0.0})
    resume(first, log=lambda s: None, epochs=2, out=str(again))
    written, start = load_checkpoint(again), load_checkpoint(first)
    assert written.training.epoch == 1 and written.box_threshold is not None
    assert all(torch.equal(written.model[k], start.model[k]) for k in start.model)


def test_checkpoint_schema_is_typed_and_stored_as_plain_dicts(tiny_checkpoint):
    """`provenance` and `training` are dataclasses in memory and the same plain dicts on disk as before."""
    from train import Provenance, SamplerState, TrainingState

    checkpoint, raw = load_checkpoint(tiny_checkpoint), torch.load(tiny_checkpoint, weights_only=True)
    assert isinstance(checkpoint.provenance, Provenance) and isinstance(checkpoint.training, TrainingState)
    assert isinstance(checkpoint.training.sampler, SamplerState) and checkpoint.provenance.recipe == "shapes"
    stored = checkpoint.to_dict()
    assert list(stored) == list(raw)  # same keys in the same order, format fields first
    assert stored["provenance"] == raw["provenance"] and type(stored["provenance"]) is dict
    assert (
        set(stored["training"])
        == set(raw["training"])
        == {"epoch", "optimizer", "scheduler", "rng", "history", "best_accuracy", "config", "sampler"}
    )
    assert stored["training"]["sampler"] == raw["training"]["sampler"] == {"seed": 0, "epoch": 1, "processes": 1}
    assert torch.equal(stored["training"]["rng"], raw["training"]["rng"])
    assert stored["training"]["history"] == raw["training"]["history"]


def test_checkpoints_of_earlier_gapcam_builds_still_load(tiny_checkpoint, tmp_path):
    """Format version 1 as the first builds wrote it: no image counts, process count or init in the
    provenance, no sampler state in the training state; it loads, exports and resumes."""
    from export import export_checkpoint

    raw = torch.load(tiny_checkpoint, weights_only=True)
    old = {
        **raw,
        "provenance": {k: v for k, v in raw["provenance"].items() if k not in ("images", "processes", "init")},
        "training": {k: v for k, v in raw["training"].items() if k != "sampler"},
    }
    torch.save(old, tmp_path / "old.pt")
    checkpoint = load_checkpoint(tmp_path / "old.pt")
    assert checkpoint.provenance.processes is None and checkpoint.training.sampler is None
    assert export_checkpoint(tmp_path / "old.pt").path.exists()
    resume(tmp_path / "old.pt", log=lambda s: None, epochs=2, out=str(tmp_path / "resumed.pt"))
    assert load_checkpoint(last_path(tmp_path / "resumed.pt")).training.sampler.epoch == 2


def test_malformed_provenance_and_training_state_are_one_line_errors(tiny_checkpoint, tmp_path):
    raw = torch.load(tiny_checkpoint, weights_only=True)
    cases = {
        "extra.pt": ({**raw, "provenance": {**raw["provenance"], "colour": "blue"}}, r"field 'provenance' holds unknown keys \['colour'\]"),
        "norecipe.pt": (
            {**raw, "provenance": {k: v for k, v in raw["provenance"].items() if k != "recipe"}},
            "field 'provenance' is malformed",
        ),
        "noepoch.pt": ({**raw, "training": {k: v for k, v in raw["training"].items() if k != "epoch"}}, "field 'training' is malformed"),
        "sampler.pt": ({**raw, "training": {**raw["training"], "sampler": {"seed": 0}}}, "field 'training.sampler' is malformed"),
    }
    for name, (values, message) in cases.items():
        torch.save(values, tmp_path / name)
        with pytest.raises(TrainError, match=f"{name}: checkpoint {message}"):
            load_checkpoint(tmp_path / name)


def test_load_model_is_deprecated_and_returns_its_old_two_values(tiny_checkpoint):
    """gapcam 0.1's `load_model` gave (model, meta); the three-value function is `load_trained`."""
    import train
    from runtime.inputs.image import Preprocess

    with pytest.warns(DeprecationWarning, match=r"train.load_model is deprecated; use train.load_trained"):
        model, meta = train.load_model(tiny_checkpoint)
    assert isinstance(model, GapCam) and not model.training and isinstance(meta, dict)
    assert isinstance(meta["preprocess"], Preprocess) and meta["preprocess"] == load_trained(tiny_checkpoint)[2]
    assert "model" not in meta and "training" not in meta
    assert meta["labels"] == list(CLASSES) and meta["provenance"]["recipe"] == "shapes" and meta["format_version"] == 1
    assert meta["architecture"]["cam_channels"] == 32 and "box_threshold" in meta["localization"]

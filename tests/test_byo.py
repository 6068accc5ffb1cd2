"""Bring your own model: torchvision GAP + linear classifiers export; other heads are refused."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from export import ExportError, export_torch_model, export_torchvision
from runtime import CamSession
from runtime.inputs.image import Preprocess

LABELS = ["cat", "dog", "fox"]


def saved(arch, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / f"{arch}.pth"
    torch.save(torchvision.models.get_model(arch, weights=None, num_classes=3).state_dict(), path)
    return path


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_torchvision_gap_models_export_with_parity(arch, tmp_path):
    report = export_torchvision(arch, saved(arch, tmp_path), LABELS, tmp_path / "m.onnx", size=(64, 64))
    assert report.parity["passed"]
    session = CamSession(report.path)
    assert session.labels == LABELS and session.input_size == (64, 64)
    from tests.test_export import fc_weight_copies

    assert session.has_class_maps and fc_weight_copies(report.path, session.info.fc_weight) == 1  # the user's fc, not a copy
    everything = session.run(np.zeros((64, 64, 3), np.uint8), classes=[0, 1, 2])[0]
    np.testing.assert_allclose(everything.cams_raw.mean(axis=(1, 2)) + session.info.fc_bias, everything.logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["mobilenet_v3_large", "vgg11"])
def test_other_heads_are_refused_with_an_explanation(arch, tmp_path):
    with pytest.raises(ExportError, match="not global average pooling \\+ one linear layer"):
        export_torchvision(arch, saved(arch, tmp_path), LABELS, tmp_path / "m.onnx", size=(64, 64))
    assert not (tmp_path / "m.onnx").exists()


def test_custom_module_api_and_a_max_pooling_head(tmp_path):
    class Net(nn.Module):
        def __init__(self, pool):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.head = nn.Linear(8, 3)
            self.pool = pool

        def forward(self, x):
            f = self.body(x)
            return self.head(f.mean((2, 3)) if self.pool == "avg" else f.amax((2, 3)))

    spec = Preprocess(height=32, width=32, color="RGB")
    good = Net("avg")
    report = export_torch_model(good, good.body, good.head, LABELS, spec, tmp_path / "good.onnx")
    assert CamSession(report.path).labels == LABELS
    bad = Net("max")
    with pytest.raises(ExportError, match="differs from the model's logits"):
        export_torch_model(bad, bad.body, bad.head, LABELS, spec, tmp_path / "bad.onnx")
    with pytest.raises(ExportError, match="2 labels"):
        export_torch_model(good, good.body, good.head, LABELS[:2], spec, tmp_path / "two.onnx")


def test_cli_with_arch_and_labels(tmp_path):
    weights = saved("resnet18", tmp_path)
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "export", *map(str, args)], cwd=tmp_path, capture_output=True, text=True, timeout=300)

    done = run(weights, "--arch", "resnet18", "--labels", "labels.txt", "--input-size", 64, 64)
    assert done.returncode == 0, done.stderr
    assert CamSession(tmp_path / "resnet18.onnx").labels == LABELS
    missing = run(weights, "--arch", "resnet18")
    assert missing.returncode == 1 and "--arch needs --labels" in missing.stderr
    (tmp_path / "two.txt").write_text("a\nb\n")
    wrong = run(weights, "--arch", "resnet18", "--labels", "two.txt", "-o", "w.onnx")
    assert wrong.returncode == 1 and "does not fit resnet18 with 2 classes" in wrong.stderr and "Traceback" not in wrong.stderr


def test_export_raises_only_export_errors(tmp_path):
    """What train refuses inside an export (an unreadable state dict) reaches the caller as ExportError."""
    (tmp_path / "junk.pt").write_text("not a state dict")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    with pytest.raises(ExportError, match="junk.pt: not a readable state dict"):
        export_torchvision("resnet18", tmp_path / "junk.pt", ["a", "b"], tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_export_leaves_no_hook_on_the_users_model(tmp_path):
    net = torchvision.models.resnet18(num_classes=3).eval()
    spec = Preprocess(64, 64, "RGB", (0.5,) * 3, (0.25,) * 3)
    export_torch_model(net, net.layer4, net.fc, LABELS, spec, tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="2 labels"):
        export_torch_model(net, net.layer4, net.fc, LABELS[:2], spec, tmp_path / "b.onnx")
    with pytest.raises(ExportError, match="not global average pooling"):
        export_torch_model(net, net.layer3, net.fc, LABELS, spec, tmp_path / "c.onnx")
    assert not net.layer4._forward_hooks and not net.layer3._forward_hooks

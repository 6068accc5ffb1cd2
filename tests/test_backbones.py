"""Every backbone: border coverage, export with parity (GAP and GMP), and the ways to initialize it."""

import math
import urllib.error

import numpy as np
import pytest
import torch
import torchvision

from export import export_model
from runtime import CamSession
from runtime.formats.onnx_model import ModelInfo
from runtime.inputs.image import Preprocess
from train import TrainError
from train.models import BACKBONES, Architecture, BackboneInit, GapCam

STRIDES = {"small_cnn": 4, "vgg16": 16, "resnet18": 32, "resnet50": 32, "densenet121": 32, "mobilenet_v3_large": 32}


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_feature_maps_cover_the_whole_image(backbone):
    """At 200x256 (the chest X-ray input) no stage drops the last row or column of the image."""
    model = GapCam(Architecture(backbone=backbone, in_channels=1, num_classes=2, cam_channels=8)).eval()
    with torch.no_grad():
        _, features = model(torch.zeros(1, 1, 200, 256))
    stride = STRIDES[backbone]
    assert features.shape[-2:] == (math.ceil(200 / stride), math.ceil(256 / stride))


def test_vgg16_gap_gives_14x14_maps_at_224():
    model = GapCam(Architecture(backbone="vgg16", in_channels=3, num_classes=2, cam_channels=8)).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224))[1].shape[-2:] == (14, 14)


def export_with_parity(model, tmp_path, channels=3, size=64):
    spec = Preprocess(height=size, width=size, color="RGB" if channels == 3 else "L", mean=(0.5,) * channels, std=(0.25,) * channels)
    info = ModelInfo(
        labels=["a", "b", "c"],
        preprocess=spec,
        pool=model.arch.pool,
        fc_weight=model.fc.weight.detach().numpy(),
        fc_bias=model.fc.bias.detach().numpy(),
    )
    return export_model(model, info, tmp_path / "m.onnx")


@pytest.mark.parametrize(
    "backbone,pool", [(b, "gap") for b in sorted(BACKBONES)] + [(b, "gmp") for b in ("small_cnn", "resnet18", "mobilenet_v3_large")]
)
def test_backbone_exports_with_parity(backbone, pool, tmp_path):
    torch.manual_seed(0)
    model = GapCam(Architecture(backbone=backbone, in_channels=3, num_classes=3, cam_channels=16, pool=pool)).eval()
    report = export_with_parity(model, tmp_path)
    assert report.parity["passed"], report.parity
    session = CamSession(report.path)
    result = session.run(np.zeros((64, 64, 3), np.uint8), classes=[0, 1, 2])[0]
    logits, features = session.infer(session.to_batch(np.zeros((64, 64, 3), np.uint8)))
    pooled = features.mean(axis=(2, 3)) if pool == "gap" else features.max(axis=(2, 3))
    np.testing.assert_allclose(pooled @ session.info.fc_weight.T + session.info.fc_bias, logits, rtol=1e-4, atol=1e-5)
    assert result.cams.shape == (3, 64, 64)


@pytest.mark.parametrize(
    "backbone,first", [("resnet18", "conv1.weight"), ("vgg16", "features.0.weight"), ("mobilenet_v3_large", "features.0.0.weight")]
)
def test_grayscale_adaptation_sums_rgb_weights(backbone, first, tmp_path):
    state = torchvision.models.get_model(backbone, weights=None).state_dict()
    torch.save(state, tmp_path / "w.pth")
    model = GapCam(
        Architecture(backbone=backbone, in_channels=1, num_classes=2, cam_channels=8), BackboneInit(weights=str(tmp_path / "w.pth"))
    )
    conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.in_channels == 1
    torch.testing.assert_close(conv.weight, state[first].sum(dim=1, keepdim=True))
    rgb = GapCam(
        Architecture(backbone=backbone, in_channels=3, num_classes=2, cam_channels=8), BackboneInit(weights=str(tmp_path / "w.pth"))
    )
    gray = torch.rand(1, 1, 64, 64)
    with torch.no_grad():  # a gray image gives the same first-layer response either way
        torch.testing.assert_close(
            conv(gray),
            next(m for m in rgb.backbone.modules() if isinstance(m, torch.nn.Conv2d))(gray.repeat(1, 3, 1, 1)),
            rtol=1e-4,
            atol=1e-4,
        )


def test_pretrained_goes_through_torchvisions_download_code(tmp_path, monkeypatch):
    """With the file in torchvision's cache (where its download puts it), --pretrained loads it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.get_model_weights("resnet18").DEFAULT
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, cache / weights.url.rsplit("/", 1)[1])
    model = GapCam(Architecture(backbone="resnet18", in_channels=3, num_classes=2, cam_channels=8), BackboneInit(pretrained=True))
    torch.testing.assert_close(model.backbone[0].weight, state["conv1.weight"])


def test_pretrained_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(TrainError, match="--pretrained: could not load torchvision's ImageNet weights for resnet18.*--weights FILE"):
        GapCam(Architecture(backbone="resnet18", num_classes=2, cam_channels=8), BackboneInit(pretrained=True))


def test_bad_initializations_are_refused(tmp_path):
    with pytest.raises(TrainError, match="small_cnn trains from scratch"):
        GapCam(Architecture(backbone="small_cnn", num_classes=2), BackboneInit(pretrained=True))
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(TrainError, match="bad.pth: does not fit"):
        GapCam(Architecture(backbone="resnet18", num_classes=2, cam_channels=8), BackboneInit(weights=str(tmp_path / "bad.pth")))
    (tmp_path / "text.pth").write_text("nope")
    with pytest.raises(TrainError, match="text.pth: not a readable state dict"):
        GapCam(Architecture(backbone="resnet18", num_classes=2, cam_channels=8), BackboneInit(weights=str(tmp_path / "text.pth")))


def test_a_backbone_name_registers_once():
    from train.models import register_backbone

    with pytest.raises(TrainError, match="'resnet18' is already registered"):
        register_backbone("resnet18")(lambda in_channels, init: (torch.nn.Identity(), 1))
    assert BACKBONES["resnet18"].__qualname__ == "torchvision_backbone[resnet18]"


@pytest.mark.parametrize(
    "name", ["resnet18", "resnet50", "vgg16", "mobilenet_v3_large", "densenet121", "efficientnet_b0", "regnet_y_400mf"]
)
def test_torchvision_layouts_describe_the_real_models(name):
    """Each recorded layout names a real feature module, a real nn.Linear and the feature width."""
    from train.models import torchvision_layout

    layout = torchvision_layout(name)
    net = torchvision.models.get_model(name, weights=None).eval()
    assert isinstance(net.get_submodule(layout.classifier), torch.nn.Linear)
    seen = {}
    net.get_submodule(layout.features).register_forward_hook(lambda module, inputs, output: seen.setdefault("f", output))
    with torch.no_grad():
        net(torch.zeros(1, 3, 64, 64))
    assert seen["f"].shape[1] == layout.feature_channels(net)

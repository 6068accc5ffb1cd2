"""GAP-CAM models: a backbone without its classifier, a 3x3 conv + ReLU, global pooling, one linear layer.

Zhou et al., "Learning Deep Features for Discriminative Localization" (CVPR 2016): for class c,
CAM_c = sum_k fc.weight[c, k] * features_k, where `features` is exactly what the pooling reduces.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from train.errors import TrainError

BackboneBuilder = Callable[..., tuple[nn.Module, int]]
BACKBONES: dict[str, BackboneBuilder] = {}


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Add a builder `fn(in_channels, **args) -> (module, out_channels)` to BACKBONES."""

    def add(fn: BackboneBuilder) -> BackboneBuilder:
        BACKBONES[name] = fn
        return fn

    return add


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_backbone("small_cnn")
def small_cnn(
    in_channels: int, widths: tuple[int, ...] = (32, 64, 128), convs_per_stage: int = 2, pools: int | None = None
) -> tuple[nn.Module, int]:
    """A VGG-style CNN for small inputs (48x48 faces, 64x64 shapes): stages of 3x3 convs with a 2x2
    max pool after each of the first `pools` stages (default: between all), so the feature maps keep
    1/2**pools of the input resolution."""
    pools = len(widths) - 1 if pools is None else pools
    layers: list[nn.Module] = []
    cin = in_channels
    for stage, width in enumerate(widths):
        if 0 < stage <= pools:
            layers.append(nn.MaxPool2d(2))
        for _ in range(convs_per_stage):
            layers += conv_bn_relu(cin, width)
            cin = width
    return nn.Sequential(*layers), cin


@register_backbone("resnet18")
def resnet18(in_channels: int) -> tuple[nn.Module, int]:
    """torchvision ResNet-18 up to layer4 (stride 32), without its average pool and fc."""
    from torchvision.models import resnet18 as build

    net = build(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return body, 512


@dataclass
class Architecture:
    """Everything needed to rebuild a GapCam; stored in checkpoints and ONNX metadata."""

    backbone: str = "small_cnn"  # a key of BACKBONES
    in_channels: int = 3  # 1 for grayscale inputs, 3 for RGB
    num_classes: int = 2  # size of the fc output
    cam_channels: int = 1024  # K, filters of the CAM conv (the paper uses 1024)
    pool: str = "gap"  # "gap" (global average) or "gmp" (global max)
    backbone_args: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the builder

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Architecture":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        arch = cls(**known)
        arch.backbone_args = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.backbone_args.items()}
        return arch


class GapCam(nn.Module):
    """backbone -> 3x3 conv (K filters) + ReLU -> global pooling -> fc; forward returns (logits, features)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        if arch.backbone not in BACKBONES:
            raise TrainError(f"unknown backbone {arch.backbone!r} (choose from {sorted(BACKBONES)})")
        if arch.pool not in ("gap", "gmp"):
            raise TrainError(f"unknown pool {arch.pool!r} (choose gap or gmp)")
        self.arch = arch
        self.backbone, width = BACKBONES[arch.backbone](arch.in_channels, **arch.backbone_args)
        self.cam_conv = nn.Sequential(nn.Conv2d(width, arch.cam_channels, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(arch.cam_channels, arch.num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.cam_conv(self.backbone(x))
        pooled = features.mean(dim=(2, 3)) if self.arch.pool == "gap" else features.amax(dim=(2, 3))
        return self.fc(pooled), features

    def cams(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Raw CAMs [N, k, h, w] for class indices [N, k]: the torch twin of runtime.cam."""
        weights = self.fc.weight[classes]  # [N, k, K]
        return torch.einsum("nck,nkhw->nchw", weights, features)

"""GAP-CAM models: a backbone without its classifier, a 3x3 conv + ReLU, global pooling, one linear layer.

Zhou et al., "Learning Deep Features for Discriminative Localization" (CVPR 2016): for class c,
CAM_c = sum_k fc.weight[c, k] * features_k, where `features` is exactly what the pooling reduces.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from runtime.errors import first_line
from train.errors import TrainError

STATE_DICT_DETAIL = ("size mismatch", "Missing key", "Unexpected key")  # the telling lines of load_state_dict errors
BackboneBuilder = Callable[..., tuple[nn.Module, int]]
BACKBONES: dict[str, BackboneBuilder] = {}


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Add a builder `fn(in_channels, init, **args) -> (module, out_channels)` to BACKBONES.

    Raises TrainError when `name` is taken: a second builder would silently change what old
    checkpoints of that name rebuild.
    """

    def add(fn: BackboneBuilder) -> BackboneBuilder:
        if name in BACKBONES:
            raise TrainError(f"backbone {name!r} is already registered (by {BACKBONES[name].__qualname__})")
        BACKBONES[name] = fn
        return fn

    return add


@dataclass(frozen=True)
class BackboneInit:
    """Where a backbone's starting weights come from; not stored, since a checkpoint holds the weights."""

    pretrained: bool = False  # torchvision's ImageNet weights, through torchvision's own download code
    weights: str | None = None  # a local state dict of the torchvision model (weights_only load)


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_backbone("small_cnn")
def small_cnn(
    in_channels: int, init: BackboneInit, widths: tuple[int, ...] = (32, 64, 128), convs_per_stage: int = 2, pools: int | None = None
) -> tuple[nn.Module, int]:
    """A VGG-style CNN for small inputs (48x48 faces, 64x64 shapes): stages of 3x3 convs with a 2x2
    max pool after each of the first `pools` stages (default: between all), so the feature maps keep
    1/2**pools of the input resolution. Pools round up, so odd sizes keep their last row and column."""
    if init.pretrained or init.weights:
        raise TrainError("small_cnn trains from scratch: --pretrained and --weights need a torchvision backbone")
    pools = len(widths) - 1 if pools is None else pools
    layers: list[nn.Module] = []
    cin = in_channels
    for stage, width in enumerate(widths):
        if 0 < stage <= pools:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        for _ in range(convs_per_stage):
            layers += conv_bn_relu(cin, width)
            cin = width
    return nn.Sequential(*layers), cin


def read_state_dict(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a local file, loaded with weights_only=True; a TrainError if it is none
    (a FIFO or device is refused unread: torch.load would block on it)."""
    if not Path(path).is_file():
        raise TrainError(f"{path}: the state dict of {what} must be a regular file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure to read means the file is unusable
        raise TrainError(f"{path}: not a readable state dict ({err.__class__.__name__})") from None
    if not isinstance(state, dict):
        raise TrainError(f"{path}: expected a state dict of {what}")
    return state


def torchvision_model(name: str, init: BackboneInit) -> nn.Module:
    """A torchvision classifier, with ImageNet weights (downloaded by torchvision) or a local file."""
    from torchvision import models

    weights = None
    if init.pretrained:
        weights = models.get_model_weights(name).DEFAULT
    try:
        net = models.get_model(name, weights=weights)
    except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
        raise TrainError(
            f"--pretrained: could not load torchvision's ImageNet weights for {name} ({err.__class__.__name__}: {err}); "
            "connect to the internet once (torchvision caches them), or pass --weights FILE"
        ) from None
    if init.weights:
        state = read_state_dict(init.weights, f"torchvision's {name}")
        try:
            result = net.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shapes that do not fit
            raise TrainError(f"{init.weights}: does not fit torchvision's {name} ({first_line(err, STATE_DICT_DETAIL)})") from None
        missing = [key for key in result.missing_keys if not key.startswith(("fc.", "classifier."))]
        if missing or result.unexpected_keys:
            raise TrainError(
                f"{init.weights}: does not fit torchvision's {name} (missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})"
            )
    return net


def imagenet_weights_cached(name: str) -> bool:
    """Whether torchvision's ImageNet weights for backbone `name` are already in torch's hub cache
    (so that starting from them needs no download)."""
    if torchvision_layout(name) is None:
        return False
    from torchvision import models

    try:
        url = models.get_model_weights(name).DEFAULT.url
    except (ValueError, KeyError):
        return False
    return (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)).is_file()


def adapt_first_conv(body: nn.Module, in_channels: int) -> None:
    """Give the first conv `in_channels` inputs. For a grayscale input an RGB-trained conv keeps its
    response to gray images: its weights are summed over the RGB axis."""
    name, conv = next((n, m) for n, m in body.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == in_channels:
        return
    padding = conv.padding if isinstance(conv.padding, str) else _pair(conv.padding)
    new = nn.Conv2d(in_channels, conv.out_channels, _pair(conv.kernel_size), _pair(conv.stride), padding, bias=conv.bias is not None)
    with torch.no_grad():
        if in_channels == 1:
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
            if conv.bias is not None and new.bias is not None:  # both or neither: `new` has a bias where `conv` has
                new.bias.copy_(conv.bias)
    parent = body.get_submodule(name.rpartition(".")[0]) if "." in name else body
    setattr(parent, name.rpartition(".")[2], new)


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's kernel size, stride or padding: (height, width) (torch annotates them as tuple[int, ...])."""
    height, width = values
    return height, width


@dataclass(frozen=True)
class TorchvisionLayout:
    """Where a torchvision classifier family keeps its parts, recorded once (as timm's model configs
    keep `first_conv` and `classifier`): training cuts its backbone at `features`, and
    bring-your-own export hooks `features` and checks that `classifier` is GAP + one linear layer."""

    features: str  # the top-level module whose output the head pools
    classifier: str  # the final nn.Linear
    channels: int | None = None  # channels of the features; None: the classifier's in_features
    trim: int = 0  # trailing layers of `features` a GAP-CAM backbone drops (VGG's pool5, as in the paper)

    def feature_channels(self, net: nn.Module) -> int:
        """Raises TrainError when `classifier` is not an nn.Linear of `net` and `channels` is not recorded."""
        if self.channels is not None:
            return self.channels
        classifier = net.get_submodule(self.classifier)
        if not isinstance(classifier, nn.Linear):
            raise TrainError(f"{type(net).__name__}.{self.classifier}: a {type(classifier).__name__}, not the nn.Linear of its layout")
        return classifier.in_features


TORCHVISION_LAYOUTS = {  # by name prefix; the longest matching prefix wins
    "resnet": TorchvisionLayout("layer4", "fc"),
    "resnext": TorchvisionLayout("layer4", "fc"),
    "wide_resnet": TorchvisionLayout("layer4", "fc"),
    "regnet": TorchvisionLayout("trunk_output", "fc"),
    "densenet": TorchvisionLayout("features", "classifier"),
    "efficientnet": TorchvisionLayout("features", "classifier.1"),
    "mobilenet_v2": TorchvisionLayout("features", "classifier.1"),
    "mobilenet_v3_large": TorchvisionLayout("features", "classifier.3", channels=960),
    "mobilenet_v3_small": TorchvisionLayout("features", "classifier.3", channels=576),
    "vgg": TorchvisionLayout("features", "classifier.6", channels=512, trim=1),
    "convnext": TorchvisionLayout("features", "classifier.2"),
}


def torchvision_layout(name: str) -> TorchvisionLayout | None:
    """The layout of a torchvision classifier by name (resnet50, vgg16, ...), or None if unknown."""
    matches = [prefix for prefix in TORCHVISION_LAYOUTS if name.startswith(prefix)]
    return TORCHVISION_LAYOUTS[max(matches, key=len)] if matches else None


def torchvision_backbone(name: str, in_channels: int, init: BackboneInit) -> tuple[nn.Module, int]:
    """A torchvision classifier's layers up to its layout's `features` (trimmed as recorded), first
    conv adapted to `in_channels`. Unpadded pools (max, and DenseNet's average pools) round up, so
    that odd-sized maps keep their last row and column (padded ones, as in ResNet's stem, already
    cover them); at sizes that halve evenly, such as 224, nothing changes."""
    layout = torchvision_layout(name)
    if layout is None:
        raise TrainError(f"{name}: no recorded layout in TORCHVISION_LAYOUTS, so no known place to cut its backbone")
    net = torchvision_model(name, init)
    layers = []
    for child_name, child in net.named_children():
        layers.append(child)
        if child_name == layout.features:
            break
    if layout.trim:
        layers[-1] = nn.Sequential(*list(layers[-1].children())[: -layout.trim])
    body = layers[0] if len(layers) == 1 else nn.Sequential(*layers)  # keeps the state-dict keys flat
    for module in body.modules():
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) and module.padding in (0, (0, 0)):
            module.ceil_mode = True
    adapt_first_conv(body, in_channels)
    return body, layout.feature_channels(net)


def _register_torchvision(name: str, doc: str) -> None:
    def build(in_channels: int, init: BackboneInit) -> tuple[nn.Module, int]:
        return torchvision_backbone(name, in_channels, init)

    build.__doc__ = doc
    build.__qualname__ = f"torchvision_backbone[{name}]"
    register_backbone(name)(build)


_register_torchvision("vgg16", "The paper's VGGnet-GAP: VGG-16 up to conv5_3 (+ReLU), pool5 and the FC layers removed: 14x14 maps at 224.")
_register_torchvision("resnet18", "torchvision resnet18 up to layer4 (stride 32), without its average pool and fc.")
_register_torchvision("resnet50", "torchvision resnet50 up to layer4 (stride 32), without its average pool and fc.")
_register_torchvision(
    "densenet121", "torchvision densenet121's features (1024 channels, stride 32, after norm5), CheXNet's backbone, without its classifier."
)
_register_torchvision(
    "mobilenet_v3_large", "torchvision MobileNetV3-Large's feature extractor (960 channels, stride 32), without its classifier."
)


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
    def from_dict(cls, data: dict) -> Architecture:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        arch = cls(**known)
        arch.backbone_args = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.backbone_args.items()}
        return arch


def class_activation_maps(features: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
    """Raw CAMs sum_k w[c, k] f_k: [N, k, h, w] for class indices [N, k], or [N, C, h, w] for every
    class; the torch side of `runtime.maps.cam.class_activation_maps` (tests/test_cam.py pins them
    equal). Training's localization, the exported graph's `cams` output and `GapCam.cams` use it."""
    if classes is None:
        return torch.einsum("ck,nkhw->nchw", weight, features)
    return torch.einsum("nck,nkhw->nchw", weight[classes], features)


class GapCam(nn.Module):
    """backbone -> 3x3 conv (K filters) + ReLU -> global pooling -> fc; forward returns (logits, features)."""

    def __init__(self, arch: Architecture, init: BackboneInit = BackboneInit()):
        super().__init__()
        if arch.backbone not in BACKBONES:
            raise TrainError(f"unknown backbone {arch.backbone!r} (choose from {sorted(BACKBONES)})")
        if arch.pool not in ("gap", "gmp"):
            raise TrainError(f"unknown pool {arch.pool!r} (choose gap or gmp)")
        self.arch = arch
        self.backbone, width = BACKBONES[arch.backbone](arch.in_channels, init, **arch.backbone_args)
        self.cam_conv = nn.Sequential(nn.Conv2d(width, arch.cam_channels, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(arch.cam_channels, arch.num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.cam_conv(self.backbone(x))
        pooled = features.mean(dim=(2, 3)) if self.arch.pool == "gap" else features.amax(dim=(2, 3))
        return self.fc(pooled), features

    def cams(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Raw CAMs [N, k, h, w] for class indices [N, k] (`class_activation_maps` with the fc weight)."""
        return class_activation_maps(features, self.fc.weight, classes)

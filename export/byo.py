"""Bring your own model: export any classifier whose head is global average pooling + one linear layer.

CAM needs nothing else (Zhou et al.): if logits == fc(mean_xy(features)), then the fc weights turn
the features into class activation maps. That identity is checked numerically before export, so a
model with another head (max pooling, several FC layers, a normalization after pooling) is refused
with the measured difference rather than exported with CAMs that explain nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

import runtime
from export.errors import ExportError
from export.int8 import Int8Options
from export.onnx_export import OPSET, ExportReport, export_model
from runtime.deprecation import warn_deprecated
from runtime.errors import first_line, raises_only
from runtime.evaluation.compare import TOLERANCE, relative_difference
from runtime.formats.files import sha256_file
from runtime.formats.onnx_model import ModelInfo
from runtime.inputs.image import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from train.models import STATE_DICT_DETAIL, read_state_dict, torchvision_layout

NO_FEATURE_MAP = "the feature module produced no [N, K, h, w] map; name the module whose output is pooled"


class CamHead(nn.Module):
    """forward(x) -> (the model's own logits, the feature maps its linear layer sees after pooling).

    It watches the feature module through a forward hook on the user's model; `release()` removes
    it, so that exporting leaves the user's model as it was.
    """

    def __init__(self, model: nn.Module, feature_module: nn.Module, fc: nn.Linear, relu: bool):
        super().__init__()
        self.model, self.relu = model, relu
        self._features: torch.Tensor | None = None  # the feature module's latest output, set by the hook
        self.fc = fc  # the model's own linear layer (not a copy): the exported class maps use its weight
        self._hook = feature_module.register_forward_hook(self._keep)

    def release(self) -> None:
        self._hook.remove()

    def _keep(self, module: nn.Module, inputs: object, output: object) -> None:
        self._features = output if isinstance(output, torch.Tensor) else None  # a tuple or dict is no feature map

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raises ExportError when the feature module produced no tensor (not on the model's path, or a tuple)."""
        logits = self.model(x)
        if self._features is None:
            raise ExportError(NO_FEATURE_MAP)
        return logits, F.relu(self._features) if self.relu else self._features


def gap_linear_head(model: nn.Module, feature_module: nn.Module, fc: nn.Module, spec: Preprocess) -> CamHead:
    """The CamHead for which logits == fc(mean(features)), or an ExportError saying why there is none
    (the head's hook is removed then; on success the caller releases it after export)."""
    if not isinstance(fc, nn.Linear):
        raise ExportError(f"the final layer is {type(fc).__name__}, not one nn.Linear: CAM needs GAP + one linear layer")
    model.eval()
    head = CamHead(model, feature_module, fc, relu=False)
    try:
        return _check_gap_linear(head, fc, spec)
    except BaseException:
        head.release()
        raise


def _check_gap_linear(head: CamHead, fc: nn.Linear, spec: Preprocess) -> CamHead:
    x = torch.randn(2, spec.channels, *spec.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, features = head(x)
    if features.ndim != 4:
        raise ExportError(NO_FEATURE_MAP)
    if features.shape[1] != fc.in_features:
        raise ExportError(
            f"features have {features.shape[1]} channels but the linear layer takes {fc.in_features}: "
            "the head is not global average pooling + one linear layer"
        )
    gaps = {}
    for relu in (False, True):  # DenseNet-style forwards apply a functional ReLU after the feature module
        with torch.no_grad():
            rebuilt = fc((F.relu(features) if relu else features).mean(dim=(2, 3)))
        gaps[relu] = relative_difference(logits.numpy(), rebuilt.numpy())[1]  # inf where either is not finite
        if gaps[relu] <= TOLERANCE:
            head.relu = relu
            return head
    raise ExportError(
        f"the head is not global average pooling + one linear layer: fc(mean(features)) differs from the "
        f"model's logits by {min(gaps.values()):.2e} of their scale (tolerance {TOLERANCE:.0e}); "
        "CAMs from this model would not explain its predictions"
    )


@raises_only(ExportError)
def export_torch_model(
    model: nn.Module,
    feature_module: nn.Module,
    fc: nn.Module,
    labels: Sequence[str],
    preprocess: Preprocess,
    out: str | os.PathLike,
    *,
    samples: torch.Tensor | None = None,
    architecture: dict | None = None,
    source: str | os.PathLike | None = None,
    opset: int = OPSET,
    int8: Int8Options | None = None,
    face_crops: bool = False,
    activation: str = "softmax",
) -> ExportReport:
    """Export a torch classifier with a GAP + linear head as a gapcam ONNX file (same checks as a
    checkpoint); with `int8` (for example from `export.int8.folder_calibration`) its INT8 model too.
    `face_crops`: the model was trained on face crops, so applications detect faces first.
    `activation`: "softmax", or "sigmoid" for a multi-label model (each class decided at 0.5).

    >>> net = torchvision.models.resnet50(weights="DEFAULT")
    >>> export_torch_model(net, net.layer4, net.fc, labels, Preprocess(224, 224, "RGB", mean, std), "resnet50.onnx")
    """
    head = gap_linear_head(model, feature_module, fc, preprocess)
    linear = head.fc  # `fc`, checked to be an nn.Linear
    bias = cast("torch.Tensor | None", linear.bias)  # torch infers Linear.bias from __init__ as a Parameter; None without bias
    try:
        if len(labels) != linear.out_features:
            raise ExportError(f"{len(labels)} labels given for a linear layer with {linear.out_features} outputs")
        info = ModelInfo(
            labels=list(labels),
            preprocess=preprocess,
            fc_weight=linear.weight.detach().cpu().numpy().astype(np.float32),
            fc_bias=(bias.detach().cpu().numpy() if bias is not None else np.zeros(linear.out_features)).astype(np.float32),
            pool="gap",
            architecture=architecture or {"model": type(model).__name__},
            source_sha256=sha256_file(source) if source else "",
            gapcam_version=runtime.__version__,
            provenance={
                "recipe": "bring-your-own",
                "exported_with": {"torch": str(torch.__version__), "onnx": onnx.__version__, "opset": opset},
            },
            face_crops=face_crops,
            activation=activation,
        )
        return export_model(head, info, out, samples, opset, int8)
    finally:
        head.release()


@raises_only(ExportError)
def export_torchvision(
    arch: str,
    weights: str | os.PathLike,
    labels: Sequence[str],
    out: str | os.PathLike,
    *,
    size: tuple[int, int] = (224, 224),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    features: str | None = None,
    fc: str | None = None,
    opset: int = OPSET,
    int8: Int8Options | None = None,
    face_crops: bool = False,
    activation: str = "softmax",
) -> ExportReport:
    """`python -m export WEIGHTS --arch NAME --labels FILE`: a torchvision architecture with a local state dict."""
    from torchvision import models

    if arch not in models.list_models(module=models):
        raise ExportError(f"--arch {arch}: not a torchvision classification model")
    state = read_state_dict(weights, f"torchvision's {arch}")
    if features is None or fc is None:
        layout = torchvision_layout(arch)
        if layout is None:
            raise ExportError(f"--arch {arch}: no known head layout; pass --features MODULE and --fc MODULE")
        features, fc = features or layout.features, fc or layout.classifier
    model = models.get_model(arch, weights=None, num_classes=len(labels))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ExportError(f"{weights}: does not fit {arch} with {len(labels)} classes ({first_line(err, STATE_DICT_DETAIL)})") from None
    try:
        feature_module, linear = model.get_submodule(features), model.get_submodule(fc)
    except AttributeError as err:
        raise ExportError(f"--arch {arch}: {err}") from None
    spec = Preprocess(height=size[0], width=size[1], color="RGB", mean=tuple(mean), std=tuple(std))
    return export_torch_model(
        model,
        feature_module,
        linear,
        labels,
        spec,
        out,
        architecture={"torchvision": arch, "features": features, "fc": fc},
        source=Path(weights),
        opset=opset,
        int8=int8,
        face_crops=face_crops,
        activation=activation,
    )


def __getattr__(name: str) -> object:
    """`export.byo.IMAGENET` of gapcam 0.1 (deprecated): runtime.inputs.image.IMAGENET_MEAN and IMAGENET_STD."""
    if name == "IMAGENET":
        warn_deprecated("export.byo.IMAGENET", "runtime.inputs.image.IMAGENET_MEAN and IMAGENET_STD")
        return {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

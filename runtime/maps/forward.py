"""Methods that need more of the model than its features and fc weight, in numpy and onnxruntime.

Score-CAM runs the model on masked copies of the input; ReciproCAM runs the model's tail (the
pooling and the fc after `features`, which a gapcam model's metadata holds) on masked copies of
the features. Neither needs gradients, so both run on the ONNX model as it is. Perturbed inputs
are made a batch at a time and go through the model in batched inference calls (`batched_logits`):
memory is bounded by the batch, never by the number of masks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.errors import CamError
from runtime.formats.onnx_model import ModelInfo
from runtime.maps.activations import activate, softmax
from runtime.maps.cam import scale_like_upsampled, upsample_bilinear

Forward = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]  # model inputs [M, C, H, W] -> logits [M, num_classes], one call
DEFAULT_BATCH = 64  # perturbed inputs per inference call
RECIPRO_KERNEL = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 16  # ReciproCAM's 3x3 Gaussian (Byun and Lee 2022)


@dataclass(frozen=True)
class ModelAccess:
    """What a method may use beyond the features: the metadata (fc weight and bias, pooling, input
    size) and, for a method that runs the model, the input batch and the model's forward pass."""

    info: ModelInfo
    inputs: npt.NDArray[np.float32] | None = None  # [N, C, H, W] the batch the features came from
    forward: Forward | None = None  # one inference call; CamSession.run gives its own
    batch_size: int = DEFAULT_BATCH  # perturbed inputs per call of `forward`

    def runnable(self, method: str) -> tuple[npt.NDArray[np.float32], Forward]:
        """The input batch and the forward pass. Raises CamError naming `method` when either is missing."""
        if self.inputs is None or self.forward is None:
            raise CamError(f"method {method!r} runs the model on masked inputs: give inputs and forward (CamSession.run does)")
        return self.inputs, self.forward


def batched_logits(forward: Forward, chunks: Iterable[npt.NDArray[np.float32]], batch_size: int) -> npt.NDArray[np.float32]:
    """Logits [M, num_classes] of a stream of model inputs given in chunks [m, C, H, W], run
    `batch_size` at a time whatever the chunks' sizes: one inference call per full batch, one for
    the rest. Memory holds one batch and one chunk."""
    results: list[npt.NDArray[np.float32]] = []
    pending: list[npt.NDArray[np.float32]] = []
    count = 0
    for chunk in chunks:
        while len(chunk):
            part, chunk = chunk[: batch_size - count], chunk[batch_size - count :]
            pending.append(part)
            count += len(part)
            if count == batch_size:
                results.append(forward(np.concatenate(pending)))
                pending, count = [], 0
    if pending:
        results.append(forward(np.concatenate(pending)))
    if not results:
        raise CamError("batched_logits: no inputs")
    return np.concatenate(results)


def head_logits(features: npt.NDArray[np.floating[Any]], info: ModelInfo) -> npt.NDArray[np.float32]:
    """The model's tail on features [M, K, h, w]: its pooling (average or max) then the fc, as the graph computes it."""
    pooled = features.mean(axis=(2, 3)) if info.pool == "gap" else features.max(axis=(2, 3))
    logits: npt.NDArray[np.float32] = (pooled.astype(np.float32) @ info.fc_weight.T + info.fc_bias).astype(np.float32)
    return logits


def scorecam_maps(features: npt.NDArray[np.floating[Any]], classes: npt.NDArray[np.int64], model: ModelAccess) -> npt.NDArray[np.float32]:
    """Score-CAM (Wang et al., CVPR Workshops 2020): ReLU(sum_k a_k f_k), a = softmax_k(logit_c(x * H_k)).

    H_k is feature map k upsampled to the input size (torch's bilinear, align_corners=False) and
    min-max scaled to [0, 1] (a constant map gives zeros), the paper's order; x is the model input
    (after normalization), as both peers mask it. One forward pass per feature map serves every
    class of the image. pytorch-grad-cam's ScoreCAM upsamples with align_corners=True, torchcam's
    scales before upsampling; both then take the softmax over maps of the class logits, as here.
    """
    inputs, forward = model.runnable("scorecam")
    n, channels = features.shape[:2]
    size = model.info.preprocess.size
    scaled = scale_like_upsampled(features, size)[0]  # [N, K, h, w]: their upsampling spans [0, 1]

    def masked() -> Iterator[npt.NDArray[np.float32]]:
        for i in range(n):
            for start in range(0, channels, model.batch_size):
                masks = upsample_bilinear(scaled[i, start : start + model.batch_size], size)  # [m, H, W]
                yield inputs[i][None] * masks[:, None]

    logits = batched_logits(forward, masked(), model.batch_size).reshape(n, channels, -1)  # [N, K, num_classes]
    chosen = np.take_along_axis(logits, classes[:, None, :], axis=2)  # [N, K, k]
    weights = softmax(np.asarray(chosen, np.float64), axis=1).astype(np.float32)
    maps: npt.NDArray[np.float32] = np.einsum("nKj,nKhw->njhw", weights, np.asarray(features, np.float32))
    return np.maximum(maps, 0.0).astype(np.float32)


def reciprocam_maps(features: npt.NDArray[np.floating[Any]], classes: npt.NDArray[np.int64], model: ModelAccess) -> npt.NDArray[np.float32]:
    """ReciproCAM (Byun and Lee 2022; OpenVINO XAI's default): map_c(i, j) = p(tail(M_ij))[c], p the
    model's probabilities (softmax; each class's sigmoid for a multi-label model, whose findings
    must not suppress each other's maps).

    M_ij keeps only feature position (i, j), spread over its 3x3 neighbourhood by the kernel
    [[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16 (cut at the border) and zero elsewhere, as in the
    authors' code; the tail is the model's pooling and fc. No input is perturbed: the h*w masked
    feature maps of an image go through the tail in numpy, a few rows of positions at a time.
    """
    n, channels, h, w = features.shape
    spread = np.zeros((h * w, h, w), np.float32)  # [position, h, w]: the kernel centred on each position
    padded = np.zeros((h + 2, w + 2), np.float32)
    for index in range(h * w):
        i, j = divmod(index, w)
        padded[:] = 0.0
        padded[i : i + 3, j : j + 3] = RECIPRO_KERNEL
        spread[index] = padded[1:-1, 1:-1]
    rows = max(1, (1 << 22) // max(1, channels * h * w))  # masked copies per step: at most 4M floats
    maps = np.empty((n, classes.shape[1], h * w), np.float32)
    for i, f in enumerate(np.asarray(features, np.float32)):
        centres = f.reshape(channels, h * w).T  # [position, K]: the feature vector each mask keeps
        logits = np.concatenate(
            [
                head_logits(centres[start : start + rows, :, None, None] * spread[start : start + rows, None], model.info)
                for start in range(0, h * w, rows)
            ]
        )
        maps[i] = activate(np.asarray(logits, np.float64), model.info.activation)[:, classes[i]].T
    return maps.reshape(n, classes.shape[1], h, w)

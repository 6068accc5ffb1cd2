"""How logits become probabilities: softmax (one class per image) and sigmoid (each class on its
own, multi-label), in numpy, in the dtype of the logits given (float32 on the per-image path,
float64 where metrics compare small differences)."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

Float = TypeVar("Float", bound=np.floating[Any])


def softmax(logits: npt.NDArray[Float], axis: int = -1) -> npt.NDArray[Float]:
    """exp(x) / sum(exp(x)) along `axis`, shifted by the max first so that no exp overflows."""
    exp = np.exp(logits - logits.max(axis=axis, keepdims=True))
    probs: npt.NDArray[Float] = exp / exp.sum(axis=axis, keepdims=True)
    return probs  # annotated: numpy types a reduction's result as Any


def sigmoid(logits: npt.NDArray[Float]) -> npt.NDArray[Float]:
    """1 / (1 + exp(-x)) without overflow for large |x| (written through exp(-|x|))."""
    decay = np.exp(-np.abs(logits))
    probs: npt.NDArray[Float] = np.where(logits >= 0, 1.0 / (1.0 + decay), decay / (1.0 + decay)).astype(logits.dtype)
    return probs


ACTIVATIONS = {"softmax": softmax, "sigmoid": sigmoid}  # by `ModelInfo.activation`


def activate(logits: npt.NDArray[Float], activation: str) -> npt.NDArray[Float]:
    """[N, num_classes] probabilities of a model whose metadata says `activation`."""
    return ACTIVATIONS[activation](logits)

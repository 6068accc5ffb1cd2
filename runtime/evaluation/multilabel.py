"""Multi-label classification metrics: per-class ROC AUC, F1 at decision thresholds, and the
thresholds themselves, calibrated on validation data (numpy only, so eval needs no torch).

A multi-label model (sigmoid outputs) says for each class whether it is present; it is judged
class by class, as CheXNet (Rajpurkar et al. 2017) and the ChestX-ray14 papers do: the area under
each class's ROC curve, and precision, recall and F1 of the positive decisions at the model's
thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.errors import CamError


def roc_auc(scores: npt.ArrayLike, positive: npt.ArrayLike) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random negative
    (ties count half), from average ranks (Mann-Whitney U). NaN where one kind is missing. `positive`:
    0/1 or bool labels. Raises CamError when the lengths differ."""
    scores, positive = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(positive).ravel() > 0.5
    if scores.shape != positive.shape:
        raise CamError(f"roc_auc: {scores.size} scores for {positive.size} labels")
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1  # 1-based rank of each distinct score's first occurrence
    ranks = (first_rank + (counts - 1) / 2)[inverse]  # tied scores share their average rank
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def f1_counts(predicted: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_]) -> dict[str, float]:
    """Precision, recall and F1 of positive decisions (0 where undefined), with the support."""
    tp = int((predicted & truth).sum())
    made, actual = int(predicted.sum()), int(truth.sum())
    precision = tp / made if made else 0.0
    recall = tp / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def best_f1_threshold(scores: npt.ArrayLike, positive: npt.ArrayLike, default: float = 0.5) -> float:
    """The probability threshold (a decision `score >= threshold`) with the best F1 on these
    examples; `default` where the class has no positive example. Every distinct score is tried,
    in one sort: no grid to miss the best. The threshold returned lies halfway between the lowest
    score kept positive and the next lower one (0 below the lowest), never on a score: a
    validation image exactly at its threshold would flip with the last bit of another provider's
    or INT8's probability, and with it the positive sets that test vectors and the INT8 gate compare."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive).astype(bool)
    if not positive.any():
        return default
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], np.cumsum(positive[order])
    last_of_run = np.r_[ranked[1:] != ranked[:-1], True]  # a threshold keeps every example tied with it
    made = np.arange(1, len(scores) + 1)[last_of_run]
    tp = hits[last_of_run]
    f1 = 2 * tp / (made + positive.sum())
    distinct = ranked[last_of_run]  # highest first
    best = int(np.argmax(f1))
    below = distinct[best + 1] if best + 1 < len(distinct) else 0.0
    return float((distinct[best] + below) / 2)


def calibrate_thresholds(probs: npt.ArrayLike, truth: npt.ArrayLike, default: float = 0.5) -> list[float]:
    """Per class, `best_f1_threshold` on validation probabilities [N, C] and 0/1 labels [N, C]."""
    probs, truth = np.asarray(probs), np.asarray(truth)
    return [best_f1_threshold(probs[:, c], truth[:, c], default) for c in range(probs.shape[1])]


def multilabel_metrics(probs: npt.ArrayLike, truth: npt.ArrayLike, labels: Sequence[str], thresholds: Sequence[float]) -> dict[str, Any]:
    """Per class: ROC AUC (None without both kinds of example), and precision, recall and F1 of
    `probs >= thresholds`; their means over the classes with both kinds of examples (AUC) or any
    positive (F1); exact-match accuracy.

    probs: [N, C] sigmoid probabilities; truth: [N, C] 0/1 labels; labels and thresholds: C each.
    """
    probs, truth = np.asarray(probs, dtype=np.float64), np.asarray(truth).astype(bool)
    if probs.ndim != 2 or probs.shape != truth.shape or not probs.shape[1] == len(labels) == len(thresholds):
        raise CamError(
            f"multi-label metrics: probabilities {list(probs.shape)}, labels {list(truth.shape)}, "
            f"{len(labels)} class names and {len(thresholds)} thresholds do not fit each other"
        )
    decided = probs >= np.asarray(thresholds, dtype=np.float64)
    per_class: dict[str, dict[str, Any]] = {}
    for c, label in enumerate(labels):
        auroc = roc_auc(probs[:, c], truth[:, c])
        per_class[label] = {
            "auroc": auroc if np.isfinite(auroc) else None,  # None (JSON null): no positive, or no negative, example
            "threshold": float(thresholds[c]),
            **f1_counts(decided[:, c], truth[:, c]),
        }
    aurocs = [m["auroc"] for m in per_class.values() if m["auroc"] is not None]
    f1s = [m["f1"] for m in per_class.values() if m["support"]]
    return {
        "images": int(len(probs)),
        "activation": "sigmoid",
        "mean_auroc": float(np.mean(aurocs)) if aurocs else None,
        "mean_f1": float(np.mean(f1s)) if f1s else 0.0,
        "exact_match": float((decided == truth).all(axis=1).mean()) if len(probs) else 0.0,
        "per_class": per_class,
        "labels": list(labels),
    }

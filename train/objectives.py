"""What a model is trained to say: one class per image (softmax, cross-entropy) or each class
present or not (sigmoid, binary cross-entropy: multi-label, as chest X-ray findings are).

An `Objective` names everything that differs between the two: the targets the loss reads, the
loss and its imbalance weights, the validation figure that picks the best epoch, and the
probabilities that reports and threshold calibration read. The CAM is the same for both:
`sum_k w[c, k] f_k` of the one linear layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from runtime.evaluation.multilabel import calibrate_thresholds, multilabel_metrics, roc_auc
from train.errors import TrainError


def as_targets(labels: np.ndarray, count: int, multilabel: bool, source: str) -> np.ndarray:
    """A split's labels as the objective reads them: int64 [N] class indices, or float32 [N, C]
    0/1 for a multi-label objective (single-label data becomes one-hot: each image has its class).

    Raises TrainError naming `source` for multi-label data trained as single-label, or labels
    that do not fit the `count` classes.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        if not multilabel:
            raise TrainError(f"{source}: the data is multi-label (several classes per image): train it with --multilabel")
        if labels.shape[1] != count or not np.isin(labels, (0, 1)).all():
            raise TrainError(f"{source}: multi-label targets must be 0/1 for {count} classes, got shape {list(labels.shape)}")
        return labels.astype(np.float32)
    if labels.ndim != 1:
        raise TrainError(f"{source}: labels must be [N] class indices or [N, {count}] 0/1 targets, got shape {list(labels.shape)}")
    labels = labels.astype(np.int64)
    if not multilabel:
        return labels
    return np.eye(count, dtype=np.float32)[labels]


@dataclass(frozen=True)
class SingleLabel:
    """Softmax over the classes, cross-entropy; the best epoch has the best validation accuracy."""

    activation: str = "softmax"
    score: str = "accuracy"  # history and provenance key: val_accuracy
    train_score: str = "accuracy"

    def class_weights(self, targets: torch.Tensor, count: int) -> torch.Tensor:
        """N / (classes * n_c) per class: each class weighs the same in the loss, whatever its size."""
        counts = torch.bincount(targets, minlength=count).clamp(min=1).float()
        return len(targets) / (count * counts)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(logits, targets, weight=weights, reduction=reduction)

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        """(right decisions, decisions): images whose top class is their label."""
        return int((logits.argmax(1) == targets).sum().item()), len(targets)

    def validation_score(self, logits: torch.Tensor, targets: torch.Tensor) -> float:
        return self.correct(logits, targets)[0] / max(1, len(targets))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1)


@dataclass(frozen=True)
class MultiLabel:
    """A sigmoid per class, binary cross-entropy with each class's positives weighted by its
    negatives / positives (Wang et al. 2017, CheXNet: rare findings are not drowned by "absent");
    the best epoch has the best mean validation ROC AUC, and each class's decision threshold is
    the one with the best validation F1 (`thresholds`)."""

    activation: str = "sigmoid"
    score: str = "mean_auroc"  # history and provenance key: val_mean_auroc
    train_score: str = "label_accuracy"  # share of right present/absent decisions at 0.5

    def class_weights(self, targets: torch.Tensor, count: int) -> torch.Tensor:
        """Per class, negatives / positives (BCE's pos_weight); 1 where a class has no positive."""
        positives = targets.sum(dim=0)
        return torch.where(positives > 0, (len(targets) - positives) / positives.clamp(min=1), torch.ones_like(positives))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None, reduction: str = "mean") -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weights, reduction="none").sum(dim=1)
        return loss.sum() if reduction == "sum" else loss.mean()

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        return int(((logits >= 0) == (targets >= 0.5)).sum().item()), targets.numel()

    def validation_score(self, logits: torch.Tensor, targets: torch.Tensor) -> float:
        """Mean ROC AUC over the classes with positive and negative validation images (0 if none has)."""
        probs, truth = self.probabilities(logits).numpy(), targets.numpy()
        aurocs = [roc_auc(probs[:, c], truth[:, c]) for c in range(probs.shape[1])]
        finite = [a for a in aurocs if np.isfinite(a)]
        return float(np.mean(finite)) if finite else 0.0

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def thresholds(self, logits: torch.Tensor, targets: torch.Tensor) -> list[float]:
        """Each class's threshold with the best F1 on these (validation) outputs."""
        return calibrate_thresholds(self.probabilities(logits).numpy(), targets.numpy())

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor, labels: list[str], thresholds: list[float]) -> dict:
        return multilabel_metrics(self.probabilities(logits).numpy(), targets.numpy(), labels, thresholds)


Objective = SingleLabel | MultiLabel


def objective(multilabel: bool) -> Objective:
    return MultiLabel() if multilabel else SingleLabel()

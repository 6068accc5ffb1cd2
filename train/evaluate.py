"""Classification evaluation: metrics, confusion matrix and training-curve plots, `python -m train eval`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from runtime.deprecation import moved_names
from runtime.evaluation import multilabel
from runtime.formats.files import atomic_path, write_text_atomic
from runtime.formats.onnx_model import DEFAULT_THRESHOLD
from runtime.inputs.image import Preprocess
from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.data import ImageSet, decoding_workers, loader
from train.errors import TrainError
from train.objectives import MultiLabel, as_targets
from train.recipes import DataOptions, recipe_of_checkpoint


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> dict:
    """Accuracy, per-class precision / recall / F1 / support, the confusion matrix (rows: true,
    columns: predicted); for two classes also ROC AUC, sensitivity and specificity (positive = labels[1])."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = probs.argmax(axis=1)
    count = len(labels)
    confusion = np.zeros((count, count), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class = {}
    for c, label in enumerate(labels):
        tp = confusion[c, c]
        predicted, actual = confusion[:, c].sum(), confusion[c, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(actual)}
    metrics = {
        "images": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "macro_f1": float(np.mean([m["f1"] for m in per_class.values()])),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "labels": list(labels),
    }
    if count == 2:
        metrics["roc_auc"] = multilabel.roc_auc(probs[:, 1], y_true == 1)
        metrics["sensitivity"] = per_class[labels[1]]["recall"]  # true positive rate
        metrics["specificity"] = per_class[labels[0]]["recall"]  # true negative rate
    return metrics


def prediction_metrics(logits: torch.Tensor, targets: torch.Tensor, labels: Sequence[str], thresholds: Sequence[float]) -> dict:
    """`classification_metrics` of single-label outputs; a multi-label model's (2-D `targets`, its
    decision `thresholds`) per-class ROC AUC and F1 (`runtime.evaluation.multilabel`)."""
    if targets.ndim == 2:  # a checkpoint without calibrated thresholds (a `.last.pt`) decides at the default
        return MultiLabel().metrics(logits, targets, list(labels), list(thresholds) or [DEFAULT_THRESHOLD] * len(labels))
    return classification_metrics(targets.numpy(), torch.softmax(logits, dim=1).numpy(), labels)


@torch.no_grad()
def logits_and_labels(
    model: torch.nn.Module, images: ImageSet, device: torch.device, workers: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(logits [n, num_classes] on the CPU, labels [n], one line per unreadable image left out) of a
    streamed set, in eval mode, `batch_size` images at a time.

    Pass the training batch size: a forward pass's activations grow with the batch, and a larger
    evaluation batch than training's (this was 128) made the peak memory of a run grow with its
    validation set until it held 128 images (docs/benchmarks.md, training memory).
    """
    model.eval()
    logits, labels, errors = [], [], []
    for batch in loader(images, batch_size, workers):
        errors += batch.errors
        if len(batch.y):
            logits.append(model(batch.x.to(device))[0].cpu())
            labels.append(batch.y)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.int64), errors
    return torch.cat(logits), torch.cat(labels), errors


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported here: only reports need it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Write a figure as PNG, atomically, and release it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    pyplot().close(fig)


def plot_confusion(metrics: dict, path: Path, title: str) -> None:
    plt = pyplot()
    matrix = np.array(metrics["confusion_matrix"])
    labels = metrics["labels"]
    size = 1.2 + 0.75 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: accuracy {metrics['accuracy']:.3f}")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > matrix.max() / 2 else "black")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    save_figure(fig, path)


def plot_per_class(metrics: dict, path: Path, title: str) -> None:
    """A multi-label model's ROC AUC and F1 per class, as bars."""
    plt = pyplot()
    labels, rows = metrics["labels"], metrics["per_class"]
    fig, ax = plt.subplots(figsize=(2 + 0.6 * len(labels), 4))
    positions = np.arange(len(labels))
    ax.bar(positions - 0.2, [rows[label]["auroc"] or np.nan for label in labels], 0.4, label="ROC AUC")
    ax.bar(positions + 0.2, [rows[label]["f1"] for label in labels], 0.4, label="F1 at its threshold")
    ax.set_xticks(positions, labels, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    mean = metrics["mean_auroc"]
    ax.set_title(f"{title}: mean ROC AUC {'n/a' if mean is None else f'{mean:.3f}'}")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def plot_history(history: list[dict], path: Path) -> None:
    """Loss and the run's score per epoch (accuracy; for multi-label runs right decisions in training
    and mean ROC AUC in validation), training and validation."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    scores = {kind: next(k for k in history[0] if k.startswith(f"{kind}_") and k != f"{kind}_loss") for kind in ("train", "val")}
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key, style in (("train", "-"), ("val", "--")):
        loss_ax.plot(epochs, [h[f"{key}_loss"] for h in history], style, label=key)
        acc_ax.plot(epochs, [h[scores[key]] for h in history], style, label=scores[key])
    for ax, name in ((loss_ax, "loss"), (acc_ax, "score")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def write_report(prefix: Path, split: str, metrics: dict, history: list[dict] | None) -> list[Path]:
    """PREFIX.SPLIT.metrics.json, PREFIX.SPLIT.confusion.png (multi-label: PREFIX.SPLIT.per_class.png) and
    PREFIX.curves.png; returns the paths."""
    multilabel = metrics.get("activation") == "sigmoid"
    figure = prefix.with_name(f"{prefix.name}.{split}.{'per_class' if multilabel else 'confusion'}.png")
    written = [prefix.with_name(f"{prefix.name}.{split}.metrics.json"), figure]
    write_text_atomic(written[0], json.dumps(metrics, indent=2))
    (plot_per_class if multilabel else plot_confusion)(metrics, figure, f"{prefix.name} ({split})")
    if history:
        written.append(prefix.with_name(f"{prefix.name}.curves.png"))
        plot_history(history, written[-1])
    return written


def evaluate_checkpoint(
    checkpoint_path: str | os.PathLike, data: str | None, split: str = "test", out_dir: str | os.PathLike | None = None, device: str = "cpu"
) -> tuple[dict, list[Path]]:
    """Score a checkpoint on a split of its recipe's data; write the report next to it (or in out_dir)."""
    checkpoint_path = Path(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)
    recipe = recipe_of_checkpoint(checkpoint.provenance, checkpoint.labels)
    config = checkpoint.training.config if checkpoint.training is not None else {}
    options = DataOptions.of_run(config, data)
    part = recipe.read_split(options, split)
    targets = as_targets(part.labels, len(checkpoint.labels), checkpoint.activation == "sigmoid", f"{checkpoint_path} ({split} split)")
    images = ImageSet(part.images, targets, Preprocess.from_dict(checkpoint.preprocess))
    model = model_from_checkpoint(checkpoint, str(checkpoint_path)).to(device)
    batch_size = int(config.get("batch_size") or recipe.batch_size)  # what training held in memory at once
    workers = decoding_workers(images, None, on_gpu=device.startswith("cuda"))
    logits, labels, skipped = logits_and_labels(model, images, torch.device(device), workers, batch_size)
    if not len(labels):
        raise TrainError(f"{split} split: no readable images")
    metrics = prediction_metrics(logits, labels, checkpoint.labels, checkpoint.thresholds)
    metrics.update({"checkpoint": str(checkpoint_path), "split": split, "skipped_images": skipped, "notes": part.notes})
    prefix = (Path(out_dir) if out_dir else checkpoint_path.parent) / checkpoint_path.stem
    return metrics, write_report(prefix, split, metrics, checkpoint.training.history if checkpoint.training is not None else None)


__getattr__ = moved_names(__name__, {"roc_auc": "runtime.evaluation.multilabel"})  # beside the multi-label metrics (0.2)

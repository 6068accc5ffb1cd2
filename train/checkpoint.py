"""The checkpoint (contract 1): built, checked, written and read here, and nowhere else.

A checkpoint is a dict of tensors and plain values, so it loads with `torch.load(path,
weights_only=True)`; gapcam never unpickles arbitrary objects. `Checkpoint` names every key once;
writes are atomic (a temporary file beside the target, then `os.replace`).
"""
from __future__ import annotations

import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import runtime
from runtime.errors import check_format, first_line
from runtime.formats.files import atomic_path
from runtime.inputs.image import Preprocess
from train.errors import TrainError
from train.models import STATE_DICT_DETAIL, Architecture, GapCam

if TYPE_CHECKING:  # imported for annotations only: the loop imports this module
    from train.loop import TrainConfig
    from train.data import TrainingData
    from train.recipes import Recipe

FORMAT = "gapcam-checkpoint"
FORMAT_VERSION = 1


@dataclass(kw_only=True)
class Checkpoint:
    """Everything needed to export, evaluate and resume a run; each field is one key of the file."""

    architecture: dict[str, Any]  # train.models.Architecture.to_dict()
    labels: list[str]  # class names in logit order
    preprocess: dict[str, Any]  # runtime.inputs.image.Preprocess.to_dict()
    provenance: dict[str, Any]  # recipe, data fingerprint, image counts, epochs, seed, metrics, versions
    model: dict[str, torch.Tensor]  # the GapCam state dict
    samples: torch.Tensor | None = None  # uint8 [k, H, W, C] raw validation images, for export parity
    localization: dict[str, Any] = field(default_factory=dict)  # calibrated box threshold, where the data has boxes
    training: dict[str, Any] | None = None  # epoch, optimizer, scheduler, RNG, history, best accuracy, config

    @property
    def box_threshold(self) -> float | None:
        return self.localization.get("box_threshold")


KEYS = tuple(f.name for f in fields(Checkpoint))
REQUIRED = tuple(f.name for f in fields(Checkpoint) if f.default is MISSING and f.default_factory is MISSING)
KINDS = {  # the type each key must hold in a file
    "architecture": dict, "labels": list, "preprocess": dict, "provenance": dict, "model": dict,
    "samples": (torch.Tensor, type(None)), "localization": dict, "training": (dict, type(None)),
}


def run_checkpoint(
    *, config: TrainConfig, recipe: Recipe, data: TrainingData, model: GapCam, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, history: list[dict], best_accuracy: float, processes: int,
    notes: list[str], sampler: dict,
) -> Checkpoint:
    """The checkpoint of a run after `len(history)` epochs, with the state that `--resume` needs
    (`sampler`: the seed, next epoch and process count that fix the batch order)."""
    epoch = len(history)
    return Checkpoint(
        architecture=recipe.architecture.to_dict(),
        labels=list(recipe.labels),
        preprocess=recipe.preprocess.to_dict(),
        provenance={
            "recipe": recipe.name,
            "data_fingerprint": data.fingerprint,
            "images": {"train": len(data.train), "val": len(data.val)},
            "epochs": epoch,
            "seed": config.seed,
            "metrics": {"val_accuracy": history[-1]["val_accuracy"], "val_loss": history[-1]["val_loss"]},
            "notes": notes,
            "processes": processes,
            "init": "imagenet" if config.pretrained else ("weights file" if config.weights else "random"),
            "gapcam_version": runtime.__version__,
            "torch_version": str(torch.__version__),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        model={k: v.detach().cpu() for k, v in model.state_dict().items()},
        samples=data.samples,
        training={
            "epoch": epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "history": history,
            "best_accuracy": best_accuracy,
            "sampler": sampler,
            "config": asdict(config),
        },
    )


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write atomically, with the format fields first."""
    values = {"format": FORMAT, "format_version": FORMAT_VERSION, **{key: getattr(checkpoint, key) for key in KEYS}}
    with atomic_path(path) as tmp:
        torch.save(values, tmp)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and check a checkpoint.

    Raises TrainError naming the file when it is missing, unreadable, of another format or version,
    or lacks a key or holds one of the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{path}: no such checkpoint file")
    try:
        values = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file can fail in many ways (zip, unpickling, storage); all mean unreadable
        reason = first_line(err, prefer=("WeightsUnpickler error",))
        raise TrainError(f"{path}: not a readable gapcam checkpoint (truncated or another format: {reason})") from None
    check_format(values, FORMAT, FORMAT_VERSION, str(path), "gapcam checkpoint", TrainError)
    missing = [key for key in REQUIRED if key not in values]
    if missing:
        raise TrainError(f"{path}: checkpoint lacks {missing}")
    unknown = sorted(set(values) - set(KEYS) - {"format", "format_version"})
    if unknown:
        raise TrainError(f"{path}: checkpoint holds unknown keys {unknown}")
    for key, kind in KINDS.items():
        if key in values and not isinstance(values[key], kind):
            raise TrainError(f"{path}: checkpoint field {key!r} has type {type(values[key]).__name__}")
    return Checkpoint(**{key: values[key] for key in KEYS if key in values})


def model_from_checkpoint(checkpoint: Checkpoint, source: str = "checkpoint") -> GapCam:
    """The GapCam the checkpoint describes, with its weights, in eval mode.

    Raises TrainError when the weights do not fit the stored architecture (torch's size detail kept).
    """
    try:
        model = GapCam(Architecture.from_dict(checkpoint.architecture))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise TrainError(f"{source}: checkpoint field 'architecture' is malformed ({first_line(err)})") from None
    try:
        model.load_state_dict(checkpoint.model)
    except RuntimeError as err:
        raise TrainError(f"{source}: weights do not fit the stored architecture ({first_line(err, STATE_DICT_DETAIL)})") from None
    return model.eval()


def load_model(path: str | os.PathLike) -> tuple[GapCam, Checkpoint, Preprocess]:
    """(model in eval mode, its checkpoint, its preprocessing) for export and tests.

    Raises TrainError as `load_checkpoint` and `model_from_checkpoint` do.
    """
    checkpoint = load_checkpoint(path)
    return model_from_checkpoint(checkpoint, str(path)), checkpoint, Preprocess.from_dict(checkpoint.preprocess)

"""The checkpoint (contract 1): its schema, and how it is written and read; the training loop builds it.

A checkpoint file is a dict of tensors and plain values, so it loads with `torch.load(path,
weights_only=True)`; gapcam never unpickles arbitrary objects. `Checkpoint` names every key of the
file once, `Provenance` and `TrainingState` the keys inside its `provenance` and `training` dicts
(they are stored as plain dicts: the dataclasses exist in memory only). Writes are atomic (a
temporary file beside the target, then `os.replace`).
"""

from __future__ import annotations

import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from runtime.deprecation import warn_deprecated
from runtime.errors import check_format, first_line
from runtime.formats.files import atomic_path
from runtime.inputs.image import Preprocess
from train.errors import TrainError
from train.models import STATE_DICT_DETAIL, Architecture, GapCam

FORMAT = "gapcam-checkpoint"
FORMAT_VERSION = 1  # unchanged since the first gapcam: every file of version 1 has this layout


@dataclass(kw_only=True)
class Provenance:
    """Where the weights come from; export copies it into the ONNX metadata. The defaults are what
    files of earlier gapcam builds, which lack a field, are read with."""

    recipe: str  # a key of train.recipes.RECIPES
    data_fingerprint: str = ""  # sha256 of the data's sources and labels (train.data.fingerprint)
    images: dict[str, int] | None = None  # {"train": n, "val": n}
    epochs: int = 0  # epochs trained
    seed: int = 0  # the run's seed (init, data, batch order, augmentation)
    # the last epoch's val_loss and validation score (val_accuracy, or val_mean_auroc for multi-label runs)
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the loader decided and skipped
    processes: int | None = None  # training processes (torchrun)
    init: str | None = None  # "imagenet", "weights file" or "random"
    gapcam_version: str = ""
    torch_version: str = ""
    created: str = ""  # ISO 8601, UTC

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class SamplerState:
    """What fixes the batch order of the next epoch: the sampler's seed, that epoch and the process count."""

    seed: int
    epoch: int
    processes: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(kw_only=True)
class TrainingState:
    """What `--resume` needs to continue a run exactly."""

    epoch: int  # epochs done
    optimizer: dict[str, Any]  # optimizer.state_dict()
    scheduler: dict[str, Any]  # scheduler.state_dict()
    rng: torch.Tensor  # torch.get_rng_state()
    history: list[dict[str, float]]  # per epoch: epoch, train/val loss and accuracy, lr, seconds
    best_accuracy: float  # the best validation score so far: accuracy, or mean ROC AUC for multi-label runs
    config: dict[str, Any]  # dataclasses.asdict(train.loop.TrainConfig): the run's options
    sampler: SamplerState | None = None  # None in files of gapcam builds before the streaming loader

    def to_dict(self) -> dict[str, Any]:
        """The stored dict; tensors are not copied (unlike `asdict`)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["sampler"] = self.sampler.to_dict() if self.sampler is not None else None
        return values


@dataclass(kw_only=True)
class Checkpoint:
    """Everything needed to export, evaluate and resume a run; each field is one key of the file."""

    architecture: dict[str, Any]  # train.models.Architecture.to_dict()
    labels: list[str]  # class names in logit order
    preprocess: dict[str, Any]  # runtime.inputs.image.Preprocess.to_dict()
    provenance: Provenance
    model: dict[str, torch.Tensor]  # the GapCam state dict
    samples: torch.Tensor | None = None  # uint8 [k, H, W, C] raw validation images, for export parity
    localization: dict[str, Any] = field(default_factory=dict)  # calibrated box threshold, where the data has boxes
    activation: str = "softmax"  # "softmax", or "sigmoid" for multi-label models (files before it: softmax)
    thresholds: list[float] = field(default_factory=list)  # sigmoid models: per class, calibrated on validation data
    training: TrainingState | None = None  # None in a file made for export only

    @property
    def box_threshold(self) -> float | None:
        return self.localization.get("box_threshold")

    def to_dict(self) -> dict[str, Any]:
        """The file's dict (format fields first): plain values and tensors only."""
        values = {key: getattr(self, key) for key in KEYS}
        values["provenance"] = self.provenance.to_dict()
        values["training"] = self.training.to_dict() if self.training is not None else None
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **values}


KEYS = tuple(f.name for f in fields(Checkpoint))
REQUIRED = tuple(f.name for f in fields(Checkpoint) if f.default is MISSING and f.default_factory is MISSING)
KINDS: dict[str, type | tuple[type, ...]] = {  # the type each key must hold in a file
    "architecture": dict,
    "labels": list,
    "preprocess": dict,
    "provenance": dict,
    "model": dict,
    "samples": (torch.Tensor, type(None)),
    "localization": dict,
    "activation": str,
    "thresholds": list,
    "training": (dict, type(None)),
}


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write atomically, with the format fields first."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint.to_dict(), tmp)


def _record(kind: type, values: dict, key: str, source: str) -> Any:
    """`kind(**values)` for the file's dict `key`; a one-line TrainError for a key it lacks or does not know."""
    unknown = sorted(set(values) - {f.name for f in fields(kind)})
    if unknown:
        raise TrainError(f"{source}: checkpoint field {key!r} holds unknown keys {unknown}")
    try:
        return kind(**values)
    except TypeError as err:
        raise TrainError(f"{source}: checkpoint field {key!r} is malformed ({first_line(err)})") from None


def _training_state(values: dict, source: str) -> TrainingState:
    sampler = values.get("sampler")
    if sampler is not None and not isinstance(sampler, dict):
        raise TrainError(f"{source}: checkpoint field 'training' is malformed (sampler is a {type(sampler).__name__})")
    sampler = _record(SamplerState, sampler, "training.sampler", source) if sampler is not None else None
    return _record(TrainingState, {**values, "sampler": sampler}, "training", source)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and check a checkpoint.

    Raises TrainError naming the file when it is missing, unreadable, of another format or version,
    or lacks a key or holds one of the wrong type (also inside `provenance` and `training`).
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
    stored = {key: values[key] for key in KEYS if key in values}
    stored["provenance"] = _record(Provenance, values["provenance"], "provenance", str(path))
    if stored.get("training") is not None:
        stored["training"] = _training_state(stored["training"], str(path))
    return Checkpoint(**stored)


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


def load_trained(path: str | os.PathLike) -> tuple[GapCam, Checkpoint, Preprocess]:
    """(model in eval mode, its checkpoint, its preprocessing): a trained model ready for export and tests.

    Raises TrainError as `load_checkpoint` and `model_from_checkpoint` do.
    """
    checkpoint = load_checkpoint(path)
    return model_from_checkpoint(checkpoint, str(path)), checkpoint, Preprocess.from_dict(checkpoint.preprocess)


def load_model(path: str | os.PathLike) -> tuple[GapCam, dict[str, Any]]:
    """Deprecated (gapcam 0.1's form): (model in eval mode, the checkpoint file's dict without its
    weights and training state, with "preprocess" a `Preprocess`). Use `load_trained`."""
    warn_deprecated("train.load_model", "train.load_trained, which returns (model, checkpoint, preprocess)")
    model, checkpoint, preprocess = load_trained(path)
    meta = {key: value for key, value in checkpoint.to_dict().items() if key not in ("model", "training")}
    meta["preprocess"] = preprocess
    return model, meta

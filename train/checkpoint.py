"""The checkpoint (contract 1): a self-describing dict of tensors and plain values.

It loads with `torch.load(path, weights_only=True)`; gapcam never unpickles arbitrary objects.
Writes are atomic: a temporary file beside the target, then `os.replace`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from runtime.files import atomic_path
from runtime.image import Preprocess
from train.errors import TrainError
from train.models import Architecture, GapCam

FORMAT = "gapcam-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("architecture", "labels", "preprocess", "provenance", "model")


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write atomically; `checkpoint` gets the format fields added."""
    checkpoint = {"format": FORMAT, "format_version": FORMAT_VERSION, **checkpoint}
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a checkpoint; anything else is a one-line TrainError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file can fail in many ways (zip, unpickling, storage); all mean unreadable
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [err.__class__.__name__]
        reason = next((line for line in lines if "WeightsUnpickler error" in line), lines[0])[:200]
        raise TrainError(f"{path}: not a readable gapcam checkpoint (truncated or another format: {reason})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise TrainError(f"{path}: not a gapcam checkpoint (no {FORMAT!r} format field)")
    if checkpoint.get("format_version") != FORMAT_VERSION:
        raise TrainError(
            f"{path}: checkpoint format version {checkpoint.get('format_version')!r} is not supported "
            f"(this gapcam reads version {FORMAT_VERSION})"
        )
    missing = [key for key in REQUIRED if key not in checkpoint]
    if missing:
        raise TrainError(f"{path}: checkpoint lacks {missing}")
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any], source: str = "checkpoint") -> GapCam:
    model = GapCam(Architecture.from_dict(checkpoint["architecture"]))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as err:
        raise TrainError(f"{source}: weights do not fit the stored architecture ({str(err).splitlines()[0]})") from None
    return model.eval()


def load_model(path: str | os.PathLike) -> tuple[GapCam, dict[str, Any]]:
    """(model in eval mode, checkpoint without its weights and training state) for export and tests."""
    checkpoint = load_checkpoint(path)
    model = model_from_checkpoint(checkpoint, str(path))
    meta = {key: value for key, value in checkpoint.items() if key not in ("model", "training")}
    meta["preprocess"] = Preprocess.from_dict(checkpoint["preprocess"])
    return model, meta

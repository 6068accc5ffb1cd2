"""A trained checkpoint's own data as INT8 calibration images: `python -m export CKPT --int8`'s default.

The one place where export reads train's datasets: `export.int8` quantizes whatever images its
caller gives it, and this module finds them for a checkpoint trained by `python -m train`.
"""

from __future__ import annotations

import os

from export.errors import ExportError
from export.int8 import CALIBRATION_IMAGES, HELD_OUT_IMAGES, CalibrationData, sampled_calibration
from train.checkpoint import load_checkpoint
from train.errors import TrainError
from train.recipes import DataOptions, recipe_of_checkpoint


def recipe_calibration(
    checkpoint_path: str | os.PathLike,
    data: str | os.PathLike | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    held_out_images: int = HELD_OUT_IMAGES,
    seed: int = 0,
) -> CalibrationData:
    """Calibration images from the training split of the checkpoint's recipe data (generated, or at
    `data`, else where training found it); held-out images from its validation split, with their
    labels and, where the data has them, true boxes.

    Raises ExportError when the recipe reads files and they are neither at `data` nor where training found them.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    recipe = recipe_of_checkpoint(checkpoint.provenance, checkpoint.labels)
    options = DataOptions.of_run(checkpoint.training.config if checkpoint.training is not None else {}, data)
    if recipe.needs_data:
        try:
            recipe.data_path(options)  # the one check of where a recipe's data is
        except TrainError:
            raise ExportError(
                f"{checkpoint_path}: --int8 calibrates on recipe {recipe.name}'s data: "
                f"pass --data PATH ({recipe.data_help}) or --calibration FOLDER"
            ) from None
    train, val = recipe.read_split(options, "train"), recipe.read_split(options, "val")
    return sampled_calibration(
        train.images,
        val.images,
        f"recipe {recipe.name}: training split (calibration), validation split (held out)",
        calibration_images,
        held_out_images,
        seed,
        held_out_labels=val.labels,
        held_out_boxes=val.boxes,
    )

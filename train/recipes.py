"""Recipes: a dataclass each, naming the data, labels, preprocessing, model and training defaults."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from runtime.image import Preprocess
from train import shapes
from train.data import Splits, make_splits
from train.errors import TrainError
from train.models import Architecture


@dataclass(frozen=True)
class DataOptions:
    """What the user said about the data on the command line."""

    path: Path | None = None  # --data
    samples: int | None = None  # --samples, for generated datasets
    seed: int = 0  # --seed


@dataclass(frozen=True)
class Recipe:
    name: str  # the RECIPE argument of `python -m train`
    labels: tuple[str, ...]  # class names in logit order
    preprocess: Preprocess  # input size, color mode, mean, std, resize method
    architecture: Architecture  # default model; --backbone and friends override it
    load: Callable[["Recipe", DataOptions], Splits]  # builds the train and validation sets
    epochs: int = 10  # default --epochs
    batch_size: int = 64  # default --batch-size
    lr: float = 3e-3  # default --lr, peak of the warm-up + cosine schedule
    optimizer: str = "adamw"  # "adamw", or "sgd" (Nesterov momentum 0.9)
    weight_decay: float = 5e-4  # weight decay of either optimizer
    hflip: bool = True  # random horizontal flips during training
    shift: int = 4  # random shifts of up to this many pixels during training
    needs_data: bool = True  # False for generated datasets, which ignore --data

    def with_arch(self, **changes) -> "Recipe":
        return replace(self, architecture=replace(self.architecture, **changes))


def load_shapes(recipe: Recipe, options: DataOptions) -> Splits:
    """The built-in synthetic set: `samples` training images and a fifth as many for validation."""
    count = options.samples if options.samples is not None else 6000
    if count < 10:
        raise TrainError(f"--samples must be at least 10, got {count}")
    size = recipe.preprocess.height
    train = shapes.render_split(count, options.seed, "train", size)
    val = shapes.render_split(max(count // 5, 5), options.seed, "val", size)
    return make_splits(list(train.images), train.labels, list(val.images), val.labels, recipe.preprocess, val_boxes=val.boxes)


SHAPES = Recipe(
    name="shapes",
    labels=shapes.CLASSES,
    preprocess=Preprocess(height=64, width=64, color="RGB", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    architecture=Architecture(
        backbone="small_cnn",
        in_channels=3,
        num_classes=len(shapes.CLASSES),
        cam_channels=256,  # narrower than the paper's 1024: trains in minutes on 2 CPU cores
        backbone_args={"widths": (16, 32, 64, 128), "convs_per_stage": 1},  # 8x8 maps at 64x64
    ),
    load=load_shapes,
    epochs=14,
    batch_size=64,
    lr=0.05,
    optimizer="sgd",
    needs_data=False,
)

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (SHAPES,)}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise TrainError(f"unknown recipe {name!r} (choose from {sorted(RECIPES)})")
    return RECIPES[name]

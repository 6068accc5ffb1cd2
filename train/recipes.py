"""Recipes: a dataclass each, naming the data, labels, preprocessing, model and training defaults."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from runtime.image import Preprocess
from runtime import shapes
from train.prepared import PreparedData, prepare
from train.readers import LabeledImages, read_chest_xray, read_fer
from train.errors import TrainError
from train.models import Architecture

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataOptions:
    """What the user said about the data on the command line."""

    path: Path | None = None  # --data
    samples: int | None = None  # --samples, for generated datasets
    seed: int = 0  # --seed: generated data and carved validation data

    @classmethod
    def of_run(cls, config: dict, data: str | os.PathLike | None = None) -> "DataOptions":
        """The data a training run used (its checkpoint's `training["config"]`), at `data` if given."""
        path = data if data else config.get("data")
        return cls(Path(path) if path else None, config.get("samples"), config.get("seed", 0))


@dataclass(frozen=True)
class Recipe:
    name: str  # the RECIPE argument of `python -m train`
    labels: tuple[str, ...]  # class names in logit order
    preprocess: Preprocess  # input size, color mode, mean, std, resize method
    architecture: Architecture  # default model; --backbone and friends override it
    read: Callable[["Recipe", DataOptions, str], LabeledImages]  # one split: "train", "val" or "test"
    epochs: int = 10  # default --epochs
    batch_size: int = 64  # default --batch-size
    lr: float = 3e-3  # default --lr, peak of the warm-up + cosine schedule
    optimizer: str = "adamw"  # "adamw", or "sgd" (Nesterov momentum 0.9)
    weight_decay: float = 5e-4  # weight decay of either optimizer
    hflip: bool = True  # random horizontal flips during training
    shift: int = 4  # random shifts of up to this many pixels during training
    class_weighted: bool = False  # weight the loss by inverse class frequency (imbalanced data)
    needs_data: bool = True  # False for generated datasets, which ignore --data
    data_help: str = ""  # the layout --data expects, for error messages and --help

    def with_arch(self, **changes) -> "Recipe":
        return replace(self, architecture=replace(self.architecture, **changes))

    def read_split(self, options: DataOptions, split: str) -> LabeledImages:
        if split not in SPLITS:
            raise TrainError(f"split must be one of {SPLITS}, got {split!r}")
        if self.needs_data and (options.path is None or not options.path.exists()):
            raise TrainError(f"recipe {self.name} needs --data PATH: {self.data_help}")
        return self.read(self, options, split)

    def load(self, options: DataOptions) -> PreparedData:
        """Training and validation sets, preprocessed."""
        train, val = self.read_split(options, "train"), self.read_split(options, "val")
        notes = list(dict.fromkeys(train.notes + val.notes))
        return prepare(train.images, train.labels, val.images, val.labels, self.preprocess, notes, val_boxes=val.boxes)


def read_shapes(recipe: Recipe, options: DataOptions, split: str) -> LabeledImages:
    """The built-in synthetic set: `samples` training images; validation and test a fifth as many."""
    count = options.samples if options.samples is not None else 6000
    if count < 10:
        raise TrainError(f"--samples must be at least 10, got {count}")
    data = shapes.render_split(count if split == "train" else max(count // 5, 5), options.seed, split, recipe.preprocess.height)
    return LabeledImages(list(data.images), data.labels, boxes=data.boxes)


def read_fer_recipe(recipe: Recipe, options: DataOptions, split: str) -> LabeledImages:
    return read_fer(options.path, split, recipe.labels, options.seed)


def read_chest_recipe(recipe: Recipe, options: DataOptions, split: str) -> LabeledImages:
    return read_chest_xray(options.path, split, recipe.labels, options.seed)


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
    read=read_shapes,
    epochs=14,
    batch_size=64,
    lr=0.05,
    optimizer="sgd",
    needs_data=False,
)

FER = Recipe(
    name="fer",
    labels=("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),  # FER2013's index order
    preprocess=Preprocess(height=48, width=48, color="L", mean=(0.5,), std=(0.25,)),
    architecture=Architecture(
        backbone="small_cnn",
        in_channels=1,
        num_classes=7,
        cam_channels=1024,
        backbone_args={"widths": (64, 128, 256), "convs_per_stage": 2, "pools": 2},  # 12x12 maps at 48x48
    ),
    read=read_fer_recipe,
    epochs=30,
    batch_size=64,
    lr=1e-3,
    hflip=True,
    shift=4,
    data_help="Kaggle's fer2013.csv, or a folder with train/<emotion>/*.jpg and test/<emotion>/*.jpg",
)

CHEST_XRAY = Recipe(
    name="chest-xray",
    labels=("NORMAL", "PNEUMONIA"),
    preprocess=Preprocess(height=200, width=256, color="L", mean=(0.5,), std=(0.25,)),  # 256 wide x 200 high
    architecture=Architecture(backbone="resnet18", in_channels=1, num_classes=2, cam_channels=1024),
    read=read_chest_recipe,
    epochs=12,
    batch_size=32,
    lr=1e-3,
    hflip=False,  # chest anatomy is not left-right symmetric (the heart sits on the left)
    shift=8,
    class_weighted=True,  # about 3 PNEUMONIA images per NORMAL one
    data_help="the Kaggle chest_xray/ folder: {train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg",
)

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (SHAPES, FER, CHEST_XRAY)}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise TrainError(f"unknown recipe {name!r} (choose from {sorted(RECIPES)})")
    return RECIPES[name]

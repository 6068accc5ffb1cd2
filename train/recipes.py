"""Recipes: a dataclass each, naming the data, labels, preprocessing, model and training defaults."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from runtime.errors import CamError
from runtime.evaluation import chestxray14 as nih
from runtime.evaluation import shapes
from runtime.inputs.image import IMAGENET_MEAN, IMAGENET_STD, Preprocess, image_size
from train.checkpoint import Provenance
from train.data import (
    CACHE_LIMIT_BYTES,
    Augment,
    ImageSet,
    TrainingData,
    fingerprint,
    parity_samples,
)
from train.errors import TrainError
from train.models import Architecture
from train.objectives import as_targets
from train.readers import (
    LabeledImages,
    cub_labels,
    folder_labels,
    read_chest_xray,
    read_chestxray14,
    read_cub,
    read_fer,
    read_image_folder,
)

SPLITS = ("train", "val", "test")
CACHE_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class DataOptions:
    """What the user said about the data on the command line."""

    path: Path | None = None  # --data
    samples: int | None = None  # --samples, for generated datasets
    seed: int = 0  # --seed: generated data and carved validation data
    labels_file: Path | None = None  # --labels FILE: class names in logit order (folder and cub)

    @classmethod
    def of_run(cls, config: dict, data: str | os.PathLike | None = None) -> DataOptions:
        """The data a training run used (its checkpoint's `training["config"]`), at `data` if given."""
        path = data if data else config.get("data")
        labels = config.get("labels")
        return cls(Path(path) if path else None, config.get("samples"), config.get("seed", 0), Path(labels) if labels else None)


@dataclass(frozen=True)
class Recipe:
    name: str  # the RECIPE argument of `python -m train`
    labels: tuple[str, ...]  # class names in logit order; empty where they come from the data (find_labels)
    preprocess: Preprocess  # input size, color mode, mean, std, resize method
    architecture: Architecture  # default model; --backbone and friends override it
    read: Callable[[Recipe, DataOptions, str], LabeledImages]  # one split: "train", "val" or "test"
    epochs: int = 10  # default --epochs
    batch_size: int = 64  # default --batch-size
    lr: float = 3e-3  # default --lr, peak of the warm-up + cosine schedule
    optimizer: str = "adamw"  # "adamw", or "sgd" (Nesterov momentum 0.9)
    weight_decay: float = 5e-4  # weight decay of either optimizer
    head_lr_scale: float = 1.0  # the CAM conv and fc learn this many times faster than the backbone (fine-tuning)
    augment: Augment = Augment(hflip=True, shift=4)  # per-sample training augmentation
    class_weighted: bool = False  # weight the loss by inverse class frequency (imbalanced data)
    pretrained: bool = False  # start from ImageNet weights by default where torchvision has them cached
    needs_data: bool = True  # False for generated datasets, which ignore --data
    data_help: str = ""  # the layout --data expects, for error messages and --help
    find_labels: Callable[[Path, Path | None], tuple[str, ...]] | None = None  # (data, --labels FILE) -> labels
    face_crops: bool = False  # inputs are face crops (FER): exported models say so, and apps find faces first
    multilabel: bool = False  # each class present or not (sigmoid, weighted BCE) rather than one per image; --multilabel

    def with_arch(self, **changes) -> Recipe:
        return replace(self, architecture=replace(self.architecture, **changes))

    def with_labels(self, labels) -> Recipe:
        """This recipe for the classes `labels` (from the data, or from a checkpoint)."""
        return replace(self.with_arch(num_classes=len(labels)), labels=tuple(labels))

    def resolve_labels(self, options: DataOptions) -> Recipe:
        """The recipe with its labels, found in the data where the recipe has none of its own."""
        if self.find_labels is None:
            return self
        return self.with_labels(self.find_labels(self.data_path(options), options.labels_file))

    def check_data(self, options: DataOptions) -> None:
        if self.needs_data:
            self.data_path(options)

    def data_path(self, options: DataOptions) -> Path:
        """--data, which must exist: where this recipe reads its dataset."""
        if options.path is None or not options.path.exists():
            raise TrainError(f"recipe {self.name} needs --data PATH: {self.data_help}")
        return options.path

    def read_split(self, options: DataOptions, split: str) -> LabeledImages:
        if split not in SPLITS:
            raise TrainError(f"split must be one of {SPLITS}, got {split!r}")
        self.check_data(options)
        return self.read(self, options, split)

    def image_set(self, options: DataOptions, split: str, augment: bool = False) -> tuple[ImageSet, LabeledImages]:
        """(one split as a streaming ImageSet, as the reader found it)."""
        part = self.read_split(options, split)
        targets = as_targets(part.labels, len(self.labels), self.multilabel, f"recipe {self.name} ({split} split)")
        return ImageSet(part.images, targets, self.preprocess, self.augment if augment else None, options.seed), part

    def load(self, options: DataOptions, cache: str = "auto", cache_dir: str | os.PathLike | None = None, workers: int = 0) -> TrainingData:
        """Training and validation sets ready to stream; with `cache` (on, or auto for image files
        whose model-size pixels fit CACHE_LIMIT_BYTES) decoded once into files in `cache_dir`."""
        train, train_part = self.image_set(options, "train", augment=True)
        val, val_part = self.image_set(options, "val")
        notes = list(dict.fromkeys(train_part.notes + val_part.notes))
        val_keep = np.arange(len(val))
        use_cache = cache == "on" or (
            cache == "auto" and not train.in_memory and train.cache_bytes() + val.cache_bytes() <= CACHE_LIMIT_BYTES
        )
        if use_cache and cache_dir is not None:
            train, _, train_errors = train.with_cache(cache_dir, workers, "training images")
            val, val_keep, val_errors = val.with_cache(cache_dir, workers, "validation images")
            gib = (train.cache_bytes() + val.cache_bytes()) / (1 << 30)
            notes.append(f"decoded once into a cache file of {gib:.2f} GiB at model size (--cache off streams from the files)")
            for errors in (train_errors, val_errors):
                if errors:
                    notes.append(f"skipped {len(errors)} unreadable image(s), e.g. {errors[0]}")
        if len(train) == 0 or len(val) == 0:
            raise TrainError("no readable images left in the training or validation split")
        boxes = (
            None
            if val_part.boxes is None
            else [model_pixel_boxes(val_part.images[i], val_part.boxes[i], self.preprocess) for i in val_keep]
        )
        return TrainingData(
            train=train,
            val=val,
            samples=parity_samples(val),
            fingerprint=fingerprint((train_part.images, train_part.labels), (val_part.images, val_part.labels)),
            notes=notes,
            val_boxes=boxes,
        )


def model_pixel_boxes(image, boxes: np.ndarray | None, spec: Preprocess) -> np.ndarray | None:
    """True boxes [m, 4] in an image's pixels -> in the model input's pixels (None stays None, as
    does an image whose size cannot be read: it is left out of calibration)."""
    if boxes is None:
        return None
    try:
        width, height = image_size(image)
    except CamError:
        return None
    scale = np.array([spec.width / width, spec.height / height] * 2)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale


def read_shapes(recipe: Recipe, options: DataOptions, split: str) -> LabeledImages:
    """The built-in synthetic set: `samples` training images; validation and test a fifth as many."""
    count = options.samples if options.samples is not None else 6000
    if count < 10:
        raise TrainError(f"--samples must be at least 10, got {count}")
    data = shapes.render_split(count if split == "train" else max(count // 5, 5), options.seed, split, recipe.preprocess.height)
    return LabeledImages(data.images, data.labels, boxes=list(data.boxes))


def read_fer_recipe(recipe: Recipe, options: DataOptions, split: str) -> LabeledImages:
    return read_fer(recipe.data_path(options), split, recipe.labels, options.seed)


def read_chest_recipe(recipe: Recipe, options: DataOptions, split: str) -> LabeledImages:
    return read_chest_xray(recipe.data_path(options), split, recipe.labels, options.seed)


def read_folder_recipe(recipe: Recipe, options: DataOptions, split: str) -> LabeledImages:
    return read_image_folder(recipe.data_path(options), split, recipe.labels, options.seed)


def read_cub_recipe(recipe: Recipe, options: DataOptions, split: str) -> LabeledImages:
    return read_cub(recipe.data_path(options), split, recipe.labels, options.seed)


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
    face_crops=True,
    epochs=30,
    batch_size=64,
    lr=1e-3,
    augment=Augment(hflip=True, shift=4),
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
    augment=Augment(hflip=False, shift=8),  # no flips: chest anatomy is not left-right symmetric (the heart sits on the left)
    class_weighted=True,  # about 3 PNEUMONIA images per NORMAL one
    data_help="the Kaggle chest_xray/ folder: {train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg",
)

FOLDER = Recipe(
    name="folder",
    labels=(),  # the class folders of DIR/train, sorted, or --labels FILE
    find_labels=folder_labels,
    preprocess=Preprocess(height=224, width=224, color="RGB", mean=IMAGENET_MEAN, std=IMAGENET_STD),
    architecture=Architecture(backbone="resnet18", in_channels=3, num_classes=2, cam_channels=1024),
    read=read_folder_recipe,
    epochs=30,
    batch_size=32,
    lr=3e-3,
    optimizer="sgd",
    weight_decay=1e-4,
    head_lr_scale=10.0,  # the new CAM conv and fc start from random weights; the backbone from ImageNet's
    # Random resized crops no smaller than a quarter of the image: torchvision's 8% would teach the
    # CAM to find object parts, which is what weakly supervised localization must avoid.
    augment=Augment(hflip=True, crop_scale=(0.25, 1.0)),
    pretrained=True,
    data_help="an image-classification folder: DIR/train/<class>/*, optional DIR/val/<class>/*, DIR/test/<class>/* and DIR/boxes.csv",
)

CUB = replace(  # the folder recipe's photo settings, for CUB's layout, model and schedule
    FOLDER,
    name="cub",
    find_labels=cub_labels,  # classes.txt: 200 bird species
    architecture=Architecture(backbone="resnet50", in_channels=3, num_classes=200, cam_channels=1024),
    read=read_cub_recipe,
    epochs=50,
    lr=1e-3,
    # Choe et al. (CVPR 2020): resize to 256x256, random 224x224 crop, flip; here the same crop
    # share (224/256 per side) of the 224x224 image, resized back.
    augment=Augment(hflip=True, crop_scale=((224 / 256) ** 2, (224 / 256) ** 2), crop_ratio=(1.0, 1.0)),
    data_help=(
        "CUB_200_2011/ as it ships: images.txt, image_class_labels.txt, train_test_split.txt, bounding_boxes.txt, classes.txt, images/"
    ),
)

CHESTXRAY14 = Recipe(
    name="chestxray14",
    labels=nih.FINDINGS,  # the 14 findings in the papers' order; "No Finding" is none of them
    # CheXNet (Rajpurkar et al. 2017): 224x224, the gray X-ray as RGB, ImageNet's normalization for its pretrained DenseNet-121
    preprocess=Preprocess(height=224, width=224, color="RGB", mean=IMAGENET_MEAN, std=IMAGENET_STD),
    architecture=Architecture(backbone="densenet121", in_channels=3, num_classes=len(nih.FINDINGS), cam_channels=1024),
    read=read_chestxray14,
    multilabel=True,  # a radiograph may show several findings: sigmoid outputs, BCE weighted per finding
    epochs=10,
    batch_size=32,
    lr=1e-3,
    optimizer="adamw",
    weight_decay=1e-4,
    head_lr_scale=10.0,  # the CAM conv and fc start from random weights; the backbone from ImageNet's
    augment=Augment(hflip=True),  # CheXNet's only augmentation
    pretrained=True,
    data_help=(
        "NIH ChestX-ray14 as it ships: Data_Entry_2017.csv (or _v2020), train_val_list.txt, test_list.txt, "
        "images/ or images_001/images/ ... images_012/images/, and optionally BBox_List_2017.csv"
    ),
)

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (SHAPES, FER, CHEST_XRAY, FOLDER, CUB, CHESTXRAY14)}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise TrainError(f"unknown recipe {name!r} (choose from {sorted(RECIPES)})")
    return RECIPES[name]


def recipe_of_checkpoint(provenance: Provenance, labels) -> Recipe:
    """The recipe a checkpoint was trained with, for its own classes."""
    recipe = get_recipe(provenance.recipe)
    return recipe.with_labels(labels) if recipe.find_labels is not None else recipe

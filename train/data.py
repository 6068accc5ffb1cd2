"""Streaming training data: images decoded per sample, in DataLoader workers, through `runtime.inputs.image`.

Nothing is decoded up front, so memory does not grow with the dataset and decoding uses every core.
Each sample is `runtime.inputs.image.resize` (the model-size image the runtime sees), then the recipe's
augmentation on those uint8 pixels, then `runtime.inputs.image.normalize`: without augmentation a sample is
exactly `runtime.inputs.image.preprocess` of its image.

Determinism: the batch order comes from a `DistributedSampler` seeded by the run's seed and epoch,
and each sample's augmentation from a generator seeded by (seed, epoch, image index). Neither
depends on the number of workers or on which worker decodes what, so a run is the same with 0 or
8 workers, and `--resume` at an epoch boundary repeats an uninterrupted run exactly.

Small sets of image files can be decoded once into a uint8 cache file at model size, which every
worker reads (`PixelCache`); sets already in memory (shapes, fer2013.csv) need none.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from runtime.errors import CamError
from runtime.inputs.image import RESIZE_METHODS, ImageInput, Preprocess, load_image, normalize, resize
from train.errors import TrainError

PARITY_SAMPLES = 8  # validation images stored in each checkpoint, for the export parity check
CACHE_LIMIT_BYTES = 4 << 30  # `--cache auto` caches image files when their model-size pixels fit in this


@dataclass(frozen=True)
class Augment:
    """Per-sample training augmentation on the model-size uint8 image, in this order: a random
    resized crop (photos), a horizontal flip, a shift with replicated edges (the small recipes)."""

    hflip: bool = True  # flip left-right with probability 0.5
    shift: int = 0  # translate by up to this many pixels in x and y, edges replicated
    crop_scale: tuple[float, float] | None = None  # random resized crop: range of the kept area share
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # ... and of its aspect ratio (width / height)

    def __call__(self, pixels: np.ndarray, rng: np.random.Generator, resample: str) -> np.ndarray:
        """uint8 HxWxC -> uint8 HxWxC of the same size."""
        if self.crop_scale is not None:
            pixels = self.random_resized_crop(pixels, rng, resample)
        if self.hflip and rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        if self.shift > 0:  # the window at (dy, dx) of the image padded by `shift` replicated pixels
            height, width = pixels.shape[:2]
            dy, dx = rng.integers(0, 2 * self.shift + 1, size=2)
            rows = np.clip(np.arange(height) + dy - self.shift, 0, height - 1)
            cols = np.clip(np.arange(width) + dx - self.shift, 0, width - 1)
            pixels = np.take(np.take(pixels, rows, axis=0), cols, axis=1)  # two 1-D gathers: 4x faster than one 2-D
        return np.ascontiguousarray(pixels)

    def random_resized_crop(self, pixels: np.ndarray, rng: np.random.Generator, resample: str) -> np.ndarray:
        """A crop of random area share and aspect ratio at a random place, resized back (as torchvision's
        RandomResizedCrop, clamped to the image instead of retried)."""
        if self.crop_scale is None:
            raise ValueError("random_resized_crop needs crop_scale")
        height, width, channels = pixels.shape
        share = rng.uniform(*self.crop_scale)
        ratio = math.exp(rng.uniform(math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])))
        area = share * width * height
        w = min(width, max(1, round(math.sqrt(area * ratio))))
        h = min(height, max(1, round(math.sqrt(area / ratio))))
        x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
        out = np.asarray(image.resize((width, height), RESIZE_METHODS[resample], box=(x0, y0, x0 + w, y0 + h)))
        return out if out.ndim == 3 else out[:, :, None]


def model_size_pixels(image: ImageInput, spec: Preprocess) -> np.ndarray:
    """uint8 HxWxC at the model's size and color: `runtime.inputs.image.resize` of the decoded image (a
    uint8 array already at that size and color is that already, and is returned as it is)."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape[:2] == spec.size:
        channels = 1 if image.ndim == 2 else image.shape[2]
        if channels == spec.channels:
            return image if image.ndim == 3 else image[:, :, None]
    pixels = np.asarray(resize(load_image(image), spec))
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


class PixelCache:
    """uint8 [N, H, W, C] model-size images in a file, read one image at a time.

    Reads go through the kernel's page cache, which every worker shares and the kernel may reclaim,
    into a fresh array per image. A memory map would serve the same pages, but each page a process
    has touched stays mapped into it, so the resident memory of every process grew by the whole
    cache over an epoch (measured: 287 MB more at 2,500 images than at 500; docs/benchmarks.md).
    Each process opens its own handle (a forked worker's inherited one would share the file offset),
    and pickling sends only the path and shape.
    """

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path, self.shape = Path(path), tuple(shape)
        self._file: io.FileIO | None = None
        self._opened_by = 0

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        """uint8 HxWxC image `index`, a copy of its bytes in the file."""
        if not 0 <= index < self.shape[0]:
            raise IndexError(f"image {index} of a cache of {self.shape[0]}")
        if self._file is None or self._opened_by != os.getpid():  # a forked worker opens its own: an inherited handle shares the offset
            self._file, self._opened_by = open(self.path, "rb", buffering=0), os.getpid()
        pixels = np.empty(self.shape[1:], dtype=np.uint8)
        self._file.seek(index * pixels.nbytes)
        if self._file.readinto(pixels.data.cast("B")) != pixels.nbytes:
            raise TrainError(f"{self.path}: the pixel cache is shorter than its {self.shape[0]} images")
        return pixels

    def __getstate__(self) -> dict:
        return {"path": self.path, "shape": self.shape, "_file": None, "_opened_by": 0}


class Batch(NamedTuple):  # a NamedTuple, so that the DataLoader's pin_memory pins its tensors
    x: torch.Tensor  # float32 [n, C, H, W] of the readable images
    y: torch.Tensor  # int64 [n]
    # The field shadows tuple.index (Python allows it; typeshed's tuple declares the method), and
    # `batch.index` is public, so mypy's override check is silenced for this line only.
    index: torch.Tensor  # type: ignore[assignment]  # int64 [n]: positions in the ImageSet
    errors: list[str]  # one line per unreadable image left out of this batch


def as_batch(batch):
    """The DataLoader's collate step: the dataset's `__getitems__` already made the batch."""
    return batch


@dataclass
class ImageSet(Dataset):
    """One split: image sources (paths, or uint8 arrays already in memory) and labels, decoded per sample."""

    images: Sequence[ImageInput] | np.ndarray  # paths or uint8 arrays (an array [N, H, W(, C)] is fine)
    labels: np.ndarray  # int64 [N] class indices, or float32 [N, C] 0/1 targets (multi-label)
    spec: Preprocess  # the model's input size, color mode and normalization
    augment: Augment | None = None  # training augmentation; None: exactly `runtime.inputs.image.preprocess`
    seed: int = 0  # with the epoch and the index, seeds each sample's augmentation
    epoch: int = 0  # set by the training loop before each epoch
    cache: PixelCache | None = None  # model-size pixels decoded once, where `with_cache` made them

    def __len__(self) -> int:
        return len(self.labels)

    def pixels(self, index: int) -> np.ndarray:
        """uint8 HxWxC model-size image `index`. Raises CamError when it cannot be read."""
        if self.cache is not None:
            return self.cache[index]
        return model_size_pixels(self.images[index], self.spec)

    def read(self, indices: Sequence[int]) -> tuple[list[np.ndarray], list[int], list[str]]:
        """(model-size pixels of the readable images among `indices`, their indices, one line per
        unreadable image), unaugmented: what batches and the cache are made of."""
        pixels, kept, errors = [], [], []
        for index in indices:
            try:
                pixels.append(self.pixels(index))
            except CamError as err:
                errors.append(str(err))
                continue
            kept.append(index)
        return pixels, kept, errors

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """The batch of images `indices`: each one's model-size pixels, augmented with its own
        generator (seeded by seed, epoch and index), then normalized together by
        `runtime.inputs.image.normalize`. Unreadable images are left out and reported. The DataLoader
        calls this once per batch, in a worker."""
        pixels, kept, errors = self.read(indices)
        if self.augment is not None:
            pixels = [
                self.augment(image, np.random.default_rng((self.seed, self.epoch, index)), self.spec.resize)
                for image, index in zip(pixels, kept, strict=True)
            ]
        x = torch.from_numpy(normalize(np.stack(pixels), self.spec)) if pixels else torch.empty(0)
        targets = self.labels[kept].astype(np.float32 if self.labels.ndim == 2 else np.int64)
        return Batch(x, torch.from_numpy(targets), torch.tensor(kept, dtype=torch.int64), errors)

    def __getitem__(self, index: int) -> Batch:
        """A batch of the one image `index`."""
        return self.__getitems__([index])

    def subset(self, keep: Sequence[int] | npt.NDArray[np.int64]) -> ImageSet:
        """The same set restricted to positions `keep` (in order)."""
        positions = np.asarray(keep, dtype=np.int64)
        images = self.images[positions] if isinstance(self.images, np.ndarray) else [self.images[i] for i in positions]
        return replace(self, images=images, labels=self.labels[positions], cache=None)

    @property
    def in_memory(self) -> bool:
        """Whether every source is a uint8 array already in memory (nothing to decode from files)."""
        return isinstance(self.images, np.ndarray) or all(isinstance(image, np.ndarray) for image in self.images)

    def cache_bytes(self) -> int:
        return len(self) * self.spec.height * self.spec.width * self.spec.channels

    def with_cache(self, folder: str | os.PathLike, workers: int, desc: str) -> tuple[ImageSet, np.ndarray, list[str]]:
        """(this set decoded once into a cache file in `folder` without its unreadable images, the
        positions kept, one line per unreadable image). The decoding runs in `workers` processes; the
        batches come back in order, so the readable images are written one after another, through
        the page cache (never mapped into this process, whose memory stays that of one batch)."""
        handle, name = tempfile.mkstemp(prefix=f"{desc.replace(' ', '-')}-", suffix=".u8", dir=folder)
        kept_all, errors = [], []
        with os.fdopen(handle, "wb") as file:
            for pixels, kept, failures in DataLoader(_Unaugmented(self), batch_size=64, num_workers=workers, collate_fn=as_batch):
                for image in pixels:
                    file.write(np.ascontiguousarray(image, dtype=np.uint8).data)
                kept_all += kept
                errors += failures
        keep = np.asarray(kept_all, dtype=np.int64)
        cache = PixelCache(Path(name), (len(keep), self.spec.height, self.spec.width, self.spec.channels))
        readable = self if len(keep) == len(self) else self.subset(keep)  # positions shift past a hole
        return replace(readable, cache=cache), keep, errors


class _Unaugmented(Dataset):
    """An ImageSet's `read` batches (model-size uint8 pixels, indices, errors), for building its cache."""

    def __init__(self, images: ImageSet):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, indices: Sequence[int]):
        return self.images.read(indices)


@dataclass
class TrainingData:
    """A run's training and validation sets, ready to stream, and what the loop reports about them."""

    train: ImageSet
    val: ImageSet
    samples: torch.Tensor  # uint8 [k, H, W, C]: raw model-size validation images for export parity
    fingerprint: str  # sha256 of the sources and labels, for provenance
    notes: list[str] = field(default_factory=list)  # what the loader decided, printed to the user
    val_boxes: list[np.ndarray | None] | None = None  # per validation image [m, 4] true boxes in model-input pixels


def fingerprint(*sets: tuple[Sequence[ImageInput] | np.ndarray, np.ndarray]) -> str:
    """sha256 over (sources, labels) for any `ImageInput` a reader returns: the pixels of in-memory
    images (arrays, PIL images), the bytes of encoded images, the name and size of files (paths, and
    PIL images opened from a file), so that a run on a large folder is fingerprinted without reading it."""
    digest = hashlib.sha256()
    for images, labels in sets:
        digest.update(np.asarray(labels, dtype=np.int64).tobytes())
        if isinstance(images, np.ndarray):
            digest.update(np.ascontiguousarray(images).tobytes())
            continue
        for image in images:
            if isinstance(image, np.ndarray):
                digest.update(np.ascontiguousarray(image).tobytes())
            elif isinstance(image, ImageFile.ImageFile) and image.filename:  # opened lazily: its file, unread
                digest.update(_file_entry(Path(os.fsdecode(image.filename))))
            elif isinstance(image, Image.Image):
                digest.update(f"PIL\0{image.mode}\0{image.width}x{image.height}\0".encode())
                try:
                    digest.update(image.tobytes())
                except (OSError, ValueError, SyntaxError):  # unreadable: training leaves it out (`load_image`)
                    digest.update(b"unreadable\0")
            elif isinstance(image, (bytes, bytearray, memoryview)):
                encoded = bytes(image)  # a memoryview of any layout too
                digest.update(f"bytes\0{len(encoded)}\0".encode())
                digest.update(encoded)
            else:
                digest.update(_file_entry(Path(image)))
    return digest.hexdigest()


def _file_entry(path: Path) -> bytes:
    """What `fingerprint` hashes for an image file: its name and size (-1 where it is no file)."""
    return f"{path.name}\0{path.stat().st_size if path.is_file() else -1}\0".encode()


def parity_samples(images: ImageSet) -> torch.Tensor:
    """uint8 [k, H, W, C]: the first PARITY_SAMPLES readable validation images at model size."""
    found = []
    for index in range(len(images)):
        try:
            found.append(images.pixels(index))
        except CamError:
            continue
        if len(found) == PARITY_SAMPLES:
            break
    return torch.from_numpy(np.stack(found))


def default_workers(world: int = 1, spare: int = 1) -> int:
    """Decoding processes per training process: its share of the usable cores, less `spare` for the
    main process (the training step; none while the cache is built), at most 8 (beyond that one GPU
    rarely waits on decoding)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores // world - spare))


def decoding_workers(images: ImageSet, requested: int | None, world: int = 1, on_gpu: bool = False) -> int:
    """`requested` (--workers), else `default_workers` where a GPU runs the model, else none: a set
    already in memory has nothing to decode, and on the CPU torch's training step already uses every
    core (measured in docs/benchmarks.md: on 2 cores an epoch takes longer with workers than without)."""
    if requested is not None:
        return requested
    return default_workers(world) if on_gpu and not images.in_memory else 0


def loader(images: ImageSet, batch_size: int, workers: int, sampler=None, pin_memory: bool = False) -> DataLoader:
    """Batches of `images` in sampler order (else in order), decoded in `workers` processes."""
    return DataLoader(
        images,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=as_batch,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0),  # workers' own seeds: never drawn from the global RNG
        prefetch_factor=4 if workers else None,
    )


def training_sampler(images: ImageSet, seed: int, rank: int, world: int) -> DistributedSampler:
    """This process's share of each epoch's shuffled order (`set_epoch` before each epoch); with one
    process, the whole order. The order depends on (seed, epoch, world) only."""
    return DistributedSampler(images, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)


def batches_per_epoch(count: int, batch_size: int, world: int) -> int:
    """Optimizer steps per epoch: every process takes ceil(count / world) images, batch_size / world at a time."""
    return math.ceil(math.ceil(count / world) / (batch_size // world))


def check_batch_size(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise TrainError(f"--batch-size {batch_size} must be a multiple of the {world} processes (each takes an equal share)")

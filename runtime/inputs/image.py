"""Image decoding and preprocessing: the one definition of the pixels a model sees.

Training's evaluation transform and `CamSession` both call `preprocess`, so a model sees the same
tensor in both places by construction.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from runtime.errors import CamError
from runtime.inputs.dicom import DEFAULT_WINDOW, DICOM_SUFFIXES, dicom_size, has_preamble, read_dicom
from runtime.inputs.limits import MAX_IMAGE_PIXELS, max_image_pixels  # noqa: F401 (their home before limits.py; callers import them here)
from runtime.inputs.limits import check_pixels as _check_pixels

# A path, a PIL image, a uint8 array, or an encoded image file's bytes (bytes, bytearray or a memoryview of them).
ImageInput: TypeAlias = str | os.PathLike[str] | Image.Image | npt.NDArray[np.uint8] | bytes | bytearray | memoryview

RESIZE_METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
COLOR_MODES = {"L": 1, "RGB": 3}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # what torchvision's pretrained weights expect
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", *DICOM_SUFFIXES}  # what folder scans pick up


@dataclass(frozen=True)
class Preprocess:
    """How raw pixels become the model input: resize to (height, width), then (x/255 - mean) / std."""

    height: int  # model input height in pixels
    width: int  # model input width in pixels
    color: str = "RGB"  # "L" (grayscale, 1 channel) or "RGB" (3 channels)
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # per channel, on the [0, 1] pixel scale
    std: tuple[float, ...] = (0.5, 0.5, 0.5)  # per channel, on the [0, 1] pixel scale
    resize: str = "bilinear"  # one of RESIZE_METHODS; the whole image is resized, never cropped

    def __post_init__(self) -> None:
        if self.color not in COLOR_MODES:
            raise CamError(f"preprocess: color must be one of {sorted(COLOR_MODES)}, got {self.color!r}")
        if self.resize not in RESIZE_METHODS:
            raise CamError(f"preprocess: resize must be one of {sorted(RESIZE_METHODS)}, got {self.resize!r}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise CamError(f"preprocess: mean and std need {self.channels} values for color {self.color}")
        if not (all(math.isfinite(v) for v in (*self.mean, *self.std)) and min(self.std) > 0):
            raise CamError("preprocess: mean must be finite and std finite and positive")
        if self.height < 1 or self.width < 1:
            raise CamError("preprocess: the input size must be at least 1x1")

    @property
    def channels(self) -> int:
        return COLOR_MODES[self.color]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.height, self.width

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocess:
        try:
            return cls(
                height=int(data["height"]),
                width=int(data["width"]),
                color=str(data["color"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                resize=str(data.get("resize", "bilinear")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CamError(f"preprocess: malformed description {data!r} ({err})") from None


def load_image(image: ImageInput, *, dicom_window: int | None = DEFAULT_WINDOW) -> Image.Image:
    """Decode a path, an encoded file's bytes, a PIL image or a uint8 array (HxW, HxWx1, HxWx3,
    HxWx4) into a PIL image.

    A DICOM file (named .dcm or .dicom, or any file with the DICOM preamble) is read by
    `runtime.inputs.dicom.read_dicom` (extra `dicom`): windowed with its VOI LUT or window at index
    `dicom_window` (None: no window), as an 8-bit "L" or "RGB" image.

    Raises CamError naming the file or array when it is missing, unreadable, empty, larger than
    `max_image_pixels()`, or of another type.
    """
    if isinstance(image, Image.Image):
        _check_pixels(*image.size, f"image ({image.mode} {image.width}x{image.height})")
        try:
            image.load()  # a lazily opened file fails here, not deep inside preprocessing
        except (OSError, ValueError, SyntaxError) as err:
            raise CamError(f"image: not a readable PIL image ({err.__class__.__name__}: {err})") from None
        return image
    if isinstance(image, np.ndarray):
        return _array_to_image(image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise CamError(f"{path}: no such image file")
        if path.suffix.lower() in DICOM_SUFFIXES:
            return read_dicom(path, str(path), window=dicom_window)
        return _decode(path, str(path), dicom_window)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(image), f"image bytes ({len(image)} bytes)", dicom_window)
    raise CamError(f"image: expected a path, encoded bytes, a PIL image or a uint8 array, got {type(image).__name__}")


def _decode(source: Path | BinaryIO, name: str, dicom_window: int | None = DEFAULT_WINDOW) -> Image.Image:
    """An image file (a path, or its bytes in a stream) decoded, its size checked from the header first.

    A file Pillow does not identify is looked at once more for the DICOM preamble (four bytes at
    128), so ordinary images cost nothing more to decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # gapcam's own limit applies
            with Image.open(source) as img:
                _check_pixels(*img.size, name)  # from the header, before anything is decoded
                img.load()
                # Photos often store their rotation in EXIF; show the model what a viewer shows
                # (in place: without it, Pillow copies every image, rotated or not).
                ImageOps.exif_transpose(img, in_place=True)
                return img
    except Image.DecompressionBombError as err:  # not an OSError: Pillow's own hard limit
        raise CamError(f"{name}: refused as a decompression bomb ({err})") from None
    except UnidentifiedImageError as err:
        if has_preamble(source):
            return read_dicom(source, name, window=dicom_window)
        raise CamError(f"{name}: not a readable image ({err.__class__.__name__}: {err})") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise CamError(f"{name}: not a readable image ({err.__class__.__name__}: {err})") from None


EXIF_ORIENTATION = 0x0112
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def image_size(image: ImageInput) -> tuple[int, int]:
    """(width, height) of the image `load_image` would return, read from a file's header (EXIF
    rotation applied) without decoding its pixels. Raises CamError as `load_image` does."""
    if isinstance(image, np.ndarray):
        return image.shape[1], image.shape[0]
    if isinstance(image, Image.Image):
        return image.size
    source: Path | BinaryIO
    if isinstance(image, (bytes, bytearray, memoryview)):  # as load_image reads them, not a path
        source, name = io.BytesIO(image), f"image bytes ({len(image)} bytes)"
    else:
        source = Path(image)
        name = str(source)
        if source.suffix.lower() in DICOM_SUFFIXES and source.is_file():
            return dicom_size(source, name)
    try:
        with Image.open(source) as img:
            width, height = img.size
            if img.getexif().get(EXIF_ORIENTATION) in TRANSPOSED_ORIENTATIONS:
                width, height = height, width
    except FileNotFoundError:
        raise CamError(f"{name}: no such image file") from None
    except UnidentifiedImageError as err:
        if has_preamble(source):
            return dicom_size(source, name)
        raise CamError(f"{name}: not a readable image ({err.__class__.__name__}: {err})") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise CamError(f"{name}: not a readable image ({err.__class__.__name__}: {err})") from None
    return width, height


def _array_to_image(array: npt.NDArray[np.generic]) -> Image.Image:
    if array.dtype != np.uint8:
        raise CamError(f"image array: expected dtype uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        _check_pixels(array.shape[1], array.shape[0], f"image array {list(array.shape)}")
        return Image.fromarray(np.ascontiguousarray(array))
    raise CamError(f"image array: expected shape HxW, HxWx1, HxWx3 or HxWx4, got {array.shape}")


def to_color(img: Image.Image, color: str) -> Image.Image:
    """Convert to "L" or "RGB"; transparent pixels are composited on black first.

    Raises CamError for a mode Pillow cannot convert.
    """
    if img.mode == "La":  # premultiplied alpha converts only through LA
        img = img.convert("LA")
    if img.mode in ("RGBA", "RGBa", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale (common for X-rays): scale to 8 bits instead of clipping.
        array = np.asarray(img, dtype=np.float64)
        top = array.max() if array.max() > 255 else 255.0
        img = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    try:
        return img.convert(color) if img.mode != color else img
    except ValueError as err:
        raise CamError(f"image: mode {img.mode} cannot be converted to {color} ({err})") from None


def resize(img: Image.Image, spec: Preprocess) -> Image.Image:
    """The model-size image, in the model's color mode, before normalization."""
    img = to_color(img, spec.color)
    if img.size != (spec.width, spec.height):
        img = img.resize((spec.width, spec.height), RESIZE_METHODS[spec.resize])
    return img


def normalize(pixels: npt.NDArray[np.uint8], spec: Preprocess) -> npt.NDArray[np.float32]:
    """uint8 HxW, HxWxC or a batch NxHxWxC at model size -> float32 CxHxW (NxCxHxW), (x/255 - mean) / std."""
    x = pixels.astype(np.float32) / np.float32(255.0)
    if x.ndim == 2:
        x = x[:, :, None]
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis((x - mean) / std, -1, -3))  # a batch's channel axis too


def image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One image as a list of one, or the images of a sequence (a list, a tuple, any Sequence): a
    path string, bytes or an array is one image, although each is a sequence too."""
    if isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike, Image.Image, np.ndarray)):
        return [images]
    return list(images)


def preprocess(
    images: ImageInput | Sequence[ImageInput], spec: Preprocess, *, dicom_window: int | None = DEFAULT_WINDOW
) -> npt.NDArray[np.float32]:
    """One or many images -> float32 [N, C, H, W], exactly what the model sees (DICOM files
    windowed as `load_image` does with `dicom_window`).

    Raises CamError for an empty sequence or any image `load_image` refuses.
    """
    items = image_list(images)
    if not items:
        raise CamError("preprocess: no images given")
    batch = [normalize(np.asarray(resize(load_image(item, dicom_window=dicom_window), spec)), spec) for item in items]
    return np.stack(batch)


def collect_images(inputs: Sequence[str]) -> tuple[list[str], set[str], list[tuple[str, str]]]:
    """(all image paths in order, the ones named on the command line, (path, reason) of image names
    in folders that are no regular files: FIFOs, devices, dangling links or link loops)."""
    paths, named, passed_over = [], set(), []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                if found.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if found.is_file():
                    paths.append(str(found))
                elif not found.is_dir():
                    passed_over.append((str(found), f"{found}: not a regular file (a FIFO, device, dangling link or link loop)"))
        else:
            paths.append(item)
            named.add(item)
    return paths, named, passed_over

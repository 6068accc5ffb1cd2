"""DICOM files as radiology viewers show them: stored values -> modality LUT -> VOI LUT or window
-> 8 bits -> MONOCHROME1 inverted (pydicom, extra `dicom`; docs/dicom.md).

What leaves this module is pixels and a size: never a header field. Errors name the file, never a
value read from its header, and pydicom's warnings and log records (which can quote a header value)
are silenced while gapcam reads.
"""

from __future__ import annotations

import importlib
import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
from PIL import Image

from runtime.errors import CamError
from runtime.inputs.limits import check_pixels
from runtime.optional import require

DICOM_SUFFIXES = {".dcm", ".dicom"}  # read as DICOM whatever their first bytes; other files only with the preamble
PREAMBLE = 128  # the bytes before the "DICM" magic of a DICOM Part 10 file
MAGIC = b"DICM"
DEFAULT_WINDOW: int | None = 0  # the file's first VOI LUT or window, as a viewer opens it; None: no window (the data's range)
DEFER_SIZE = 64 * 1024  # header values larger than this (the pixel data) stay on disk until the header is checked
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
COLOR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420")  # pydicom hands these over as RGB

_reading = threading.local()  # set while this thread reads a DICOM file: pydicom's log records are dropped then


class _WhileReading(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_reading, "active", False)


_log_filter = _WhileReading()


@contextmanager
def _quiet() -> Iterator[None]:
    """pydicom warns and logs about odd header values, quoting them (a date, a name): none of that
    reaches gapcam's output. Log records are dropped for this thread only; warnings as `_decode`'s."""
    logger = logging.getLogger("pydicom")
    if _log_filter not in logger.filters:
        logger.addFilter(_log_filter)
    _reading.active = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _reading.active = False


def _pydicom(module: str = "") -> Any:
    """pydicom, or one of its modules, loaded on first use (`runtime.optional.require`: a missing
    pydicom is a one-line CamError naming the extra `dicom`)."""
    top = require("dicom")
    return importlib.import_module(f"pydicom.{module}") if module else top


def check_window(window: object) -> int | None:
    """`window` if it is a window index (an int >= 0) or None, else CamError."""
    if window is None or (isinstance(window, int) and not isinstance(window, bool) and window >= 0):
        return window
    raise CamError(f"dicom_window: expected a window index >= 0 or None (no window), got {window!r}")


def has_preamble(source: Path | BinaryIO) -> bool:
    """Whether a file (a path, or a seekable stream) has the DICOM Part 10 magic at byte 128: four
    bytes read, for files that Pillow could not identify."""
    try:
        if isinstance(source, Path):
            with source.open("rb") as file:
                head = file.read(PREAMBLE + len(MAGIC))
        else:
            source.seek(0)
            head = source.read(PREAMBLE + len(MAGIC))
            source.seek(0)
    except OSError:
        return False
    return head[PREAMBLE:] == MAGIC


def to_uint8(values: npt.NDArray[Any], low: float, high: float) -> npt.NDArray[np.uint8]:
    """The documented 8-bit mapping: round(255 * (v - low) / (high - low)), halves rounded up, clipped
    to 0..255. `low` maps to 0 and `high` to 255 (either may be the larger); low == high gives zeros."""
    if high == low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    pixels: npt.NDArray[np.uint8] = np.floor(scaled + 0.5).astype(np.uint8)
    return pixels


def read_dicom(source: Path | BinaryIO, name: str, *, window: int | None = DEFAULT_WINDOW) -> Image.Image:
    """A DICOM file (a path, or its bytes in a stream) as an 8-bit PIL image: "L" for MONOCHROME1/2,
    "RGB" for color.

    Grayscale: the modality LUT (or Rescale Slope/Intercept), then the VOI LUT or window at index
    `window` (pydicom's `apply_voi_lut`, which prefers a VOI LUT Sequence to Window Center/Width),
    mapped from the VOI output range to 0..255 by `to_uint8`; where the file has no window, or
    `window` is None, from the image's own minimum and maximum. MONOCHROME1 is inverted last
    (255 - v), so that bone is white as in MONOCHROME2. Color: 8 bits as stored; deeper samples
    mapped from 0..2**BitsStored - 1.

    Raises CamError naming the file (`name`) when pydicom is missing, the file is no readable
    DICOM, has no pixel data, more than one frame, more pixels than `max_image_pixels()` (checked
    from the header, before the pixel data is read or decoded), a photometric interpretation other
    than the above, a compression no installed decoder reads (naming the plugins that would), pixel
    data that does not decode (truncated, corrupt), or fewer windows than `window` asks for.
    """
    window = check_window(window)
    pydicom = _pydicom()
    processing = _pydicom("pixels.processing")

    with _quiet():
        try:
            # force: a .dcm without the 128-byte preamble (written by older tools) reads too
            ds = pydicom.dcmread(source, force=True, defer_size=DEFER_SIZE if isinstance(source, Path) else None)
            header = _image_header(ds, name)
        except CamError:
            raise
        except Exception as err:  # pydicom raises many types on a corrupt header; its message may quote a value
            raise CamError(f"{name}: not a readable DICOM file ({err.__class__.__name__})") from None
        check_pixels(header["columns"], header["rows"], name)  # from the header, before anything is decoded
        _set_transfer_syntax(ds)
        _check_decoder(ds, name)
        try:
            stored = ds.pixel_array
        except Exception as err:  # truncated or corrupt pixel data; pydicom's messages say what, never a patient field
            raise CamError(f"{name}: DICOM pixel data does not decode ({err.__class__.__name__}: {_first_line(err)})") from None
        color = header["photometric"] in COLOR
        expected = (header["rows"], header["columns"], 3) if color else (header["rows"], header["columns"])
        if stored.shape != expected:
            raise CamError(f"{name}: DICOM pixel data decodes to shape {list(stored.shape)}, the header says {list(expected)}")
        if color:
            bits = header["bits_stored"]
            pixels = stored.astype(np.uint8) if bits <= 8 else to_uint8(stored, 0, 2**bits - 1)
            return Image.fromarray(np.ascontiguousarray(pixels), "RGB")
        try:
            values = processing.apply_modality_lut(stored, ds)
            windows = _window_count(ds)
            if window is not None and window >= max(windows, 1):
                raise CamError(f"{name}: dicom_window {window} asked for, the file has {windows} VOI LUTs or windows (0-based)")
            if window is not None and windows:
                low, high = _voi_range(ds, window, processing.apply_windowing)
                values = processing.apply_voi_lut(values, ds, index=window)
            else:
                low, high = float(values.min()), float(values.max())
        except CamError:
            raise
        except (ValueError, NotImplementedError, IndexError, TypeError, KeyError, AttributeError) as err:
            raise CamError(f"{name}: DICOM LUT or window not applicable ({err.__class__.__name__}: {_first_line(err)})") from None
    pixels = to_uint8(values, low, high)
    if header["photometric"] == "MONOCHROME1":
        np.subtract(255, pixels, out=pixels)
    return Image.fromarray(pixels, "L")


def dicom_size(source: Path | BinaryIO, name: str) -> tuple[int, int]:
    """(width, height) of the image `read_dicom` would return, from the header alone."""
    pydicom = _pydicom()
    with _quiet():
        try:
            header = _image_header(pydicom.dcmread(source, force=True, stop_before_pixels=True), name, need_pixels=False)
        except CamError:
            raise
        except Exception as err:  # as in read_dicom
            raise CamError(f"{name}: not a readable DICOM file ({err.__class__.__name__})") from None
    return header["columns"], header["rows"]


def _image_header(ds: Any, name: str, need_pixels: bool = True) -> dict[str, Any]:
    """The few Image Pixel fields gapcam reads, checked: one frame, a known photometric interpretation."""
    if need_pixels and not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise CamError(f"{name}: a DICOM file without pixel data (a report, structured document or DICOMDIR, not an image)")
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise CamError(
            f"{name}: a multi-frame DICOM ({frames} frames); gapcam reads single images: save the frame to explain as its own file"
        )
    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if photometric not in MONOCHROME + COLOR or samples != (3 if photometric in COLOR else 1):
        shown = photometric if photometric.replace("_", "").replace(" ", "").isalnum() else "unknown"
        raise CamError(
            f"{name}: DICOM photometric interpretation {shown} with {samples} samples a pixel is not supported "
            f"(gapcam reads {', '.join(MONOCHROME)} and RGB/YBR color)"
        )
    return {"rows": rows, "columns": columns, "photometric": photometric, "bits_stored": int(ds.get("BitsStored") or 8)}


def _set_transfer_syntax(ds: Any) -> None:
    """A file without file meta (no preamble, written by older tools) is uncompressed: its transfer
    syntax is the encoding pydicom read it in, which its pixel decoder needs to be told."""
    uid = _pydicom("uid")

    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") is not None:
        return
    implicit, little = ds.original_encoding
    if meta is None:
        ds.file_meta = meta = _pydicom("dataset").FileMetaDataset()
    meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian if implicit else uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian


def _check_decoder(ds: Any, name: str) -> None:
    """A compressed transfer syntax needs a decoder plugin: when none is installed, say which to install."""
    get_decoder = _pydicom("pixels.decoders.base").get_decoder

    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None or not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise CamError(f"{name}: DICOM transfer syntax {syntax} is one pydicom cannot decode") from None
    if not decoder.is_available:
        raise CamError(
            f"{name}: DICOM pixel data compressed as {syntax.name}, and no installed decoder reads it: install "
            + " or ".join(decoder.missing_dependencies)
        )


def _window_count(ds: Any) -> int:
    """How many VOI transforms the file offers, as pydicom's `apply_voi_lut` chooses among them:
    the VOI LUT Sequence's items where it is present, else the Window Center/Width pairs."""
    lut = ds.get("VOILUTSequence")
    if lut and None not in (lut[0].get("LUTDescriptor"), lut[0].get("LUTData")):
        return len(lut)
    if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
        return 0
    return int(min(ds["WindowCenter"].VM, ds["WindowWidth"].VM))


def _voi_range(ds: Any, index: int, apply_windowing: Any) -> tuple[float, float]:
    """(low, high): the output range of the VOI transform at `index`, mapped to 0 and 255. A VOI
    LUT's is 0..2**n - 1 for its n bits an entry (the third LUT Descriptor value, PS3.3 C.11.2.1.1);
    a window's is what pydicom's `apply_windowing` maps below and above it (from Bits Stored, Pixel
    Representation and the rescale), read by windowing -inf and +inf, so that gapcam and pydicom agree."""
    lut = ds.get("VOILUTSequence")
    if lut and None not in (lut[0].get("LUTDescriptor"), lut[0].get("LUTData")):
        return 0.0, float(2 ** int(lut[index].LUTDescriptor[2]) - 1)
    low, high = apply_windowing(np.array([-np.inf, np.inf]), ds, index)
    return float(low), float(high)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]

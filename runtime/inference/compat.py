"""Which onnxruntime runs which gapcam model, measured, and the check a session makes before loading.

Edge devices keep old onnxruntime builds (JetPack 5 ships 1.15-1.17). A model needs what its file
asks for: the ONNX IR version it is stamped with, the opset it imports and the kernels of its
operators at that opset. `export` writes the lowest IR version and opset imports the graph needs and
records `min_onnxruntime` in the metadata from the table below; `CamSession` reads that field from
the file's header (no onnx package, nothing but the top-level fields touched) and refuses a build
that is too old in one line, instead of onnxruntime's load error.

The table was measured (benchmarks/onnxruntime_compat.py, docs/compatibility.md): every gapcam
graph, fp32 and INT8 (QDQ), exported at each opset and loaded and run on each onnxruntime release.
"""

from __future__ import annotations

import json
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from runtime.errors import CamError

OLDEST_ONNXRUNTIME = "1.15"  # the oldest onnxruntime gapcam supports and tests (1.15.1)
DEFAULT_OPSET = 18  # runs on every supported onnxruntime, fp32 and INT8
# opset -> the oldest onnxruntime that loads and runs gapcam's graphs at it: (fp32, INT8 QDQ).
# INT8 at opset 19 needs 1.16: 1.15 has no QuantizeLinear(19) kernel although it reads opset 19.
ONNXRUNTIME_FOR_OPSET = {18: ("1.15", "1.15"), 19: ("1.15", "1.16"), 20: ("1.17", "1.17"), 21: ("1.18", "1.18"), 22: ("1.21", "1.21")}
OPSETS = tuple(ONNXRUNTIME_FOR_OPSET)  # the opsets `export --opset` accepts
# IR version -> the oldest onnxruntime that reads it (1.15-1.17 read IR 9 at most, 1.18-1.22 IR 10).
ONNXRUNTIME_FOR_IR = {**dict.fromkeys(range(3, 10), OLDEST_ONNXRUNTIME), 10: "1.18"}
MIN_ONNXRUNTIME_KEY = "gapcam.min_onnxruntime"  # the metadata key (runtime.formats.onnx_model.ModelInfo.min_onnxruntime)
VERSION_PATTERN = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def version_tuple(version: str) -> tuple[int, int, int]:
    """'1.16.3' -> (1, 16, 3); '1.18' -> (1, 18, 0); a suffix ('1.20.0+cu118', '1.17.0.dev') is ignored.

    Raises ValueError for text that does not start with MAJOR.MINOR.
    """
    match = VERSION_PATTERN.match(version.strip())
    if not match:
        raise ValueError(f"not a version: {version!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def required_onnxruntime(opset: int, precision: str = "fp32") -> str:
    """The oldest onnxruntime that runs a gapcam model exported at `opset` ("fp32" or "int8").

    Raises CamError for an opset gapcam does not export.
    """
    if opset not in ONNXRUNTIME_FOR_OPSET:
        raise CamError(f"opset {opset}: gapcam exports opsets {OPSETS[0]} to {OPSETS[-1]}")
    return ONNXRUNTIME_FOR_OPSET[opset][precision == "int8"]


@dataclass
class ModelHeader:
    """The top-level fields of an ONNX file that say which onnxruntime can load it."""

    ir_version: int = 0
    opsets: dict[str, int] = field(default_factory=dict)  # domain ("" is ai.onnx) -> version
    min_onnxruntime: str = ""  # the model's own statement (models exported since it was added), else ""

    def required(self) -> tuple[str, str]:
        """(the oldest onnxruntime this model needs, why), from its own statement, else from its IR
        version and opset; ("", "") when neither says (a newer IR or opset than the table knows)."""
        if self.min_onnxruntime:
            return self.min_onnxruntime, "its metadata says so"
        by_ir = ONNXRUNTIME_FOR_IR.get(self.ir_version, "")
        by_opset = ONNXRUNTIME_FOR_OPSET.get(self.opsets.get("", 0), ("",))[0]
        if not by_ir or not by_opset:
            return "", ""
        return max(by_ir, by_opset, key=version_tuple), f"ONNX IR version {self.ir_version}, opset {self.opsets.get('', 0)}"


def _varint(data: bytes | mmap.mmap, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or malformed varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes | mmap.mmap, start: int, end: int) -> Iterator[tuple[int, int, int | tuple[int, int]]]:
    """(field number, wire type, value or (offset, length)) of each protobuf field in data[start:end].
    Length-delimited fields are returned as offsets, never copied, so a huge graph is skipped unread."""
    pos = start
    while pos < end:
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise ValueError("a field runs past the end of the file")
            yield number, wire, (pos, length)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire} is not protobuf's")
    if pos != end:
        raise ValueError("a field runs past the end of the file")


def _text(data: bytes | mmap.mmap, span: tuple[int, int], most: int = 1 << 16) -> str:
    offset, length = span
    return bytes(data[offset : offset + min(length, most)]).decode("utf-8", "replace")


def _json_text(text: str) -> str:
    """Metadata values are JSON: '"1.15"' -> '1.15'."""
    try:
        value = json.loads(text)
    except ValueError:
        return ""
    return value if isinstance(value, str) else ""


def parse_header(data: bytes | mmap.mmap) -> ModelHeader:
    """IR version, opset imports and `gapcam.min_onnxruntime` of a serialized ModelProto.

    ModelProto's field numbers: 1 ir_version, 8 opset_import (1 domain, 2 version), 14 metadata_props
    (1 key, 2 value). Raises ValueError when the bytes are not a protobuf message.
    """
    header = ModelHeader()
    # A varint field's value is an int (wire type 0), a length-delimited one's an (offset, length) span (wire type 2).
    for number, _, value in _fields(data, 0, len(data)):
        if number == 1 and isinstance(value, int):
            header.ir_version = value
        elif number == 8 and isinstance(value, tuple):
            entry = {n: v for n, _, v in _fields(data, value[0], value[0] + value[1])}
            domain, version = entry.get(1), entry.get(2)
            header.opsets[_text(data, domain) if isinstance(domain, tuple) else ""] = version if isinstance(version, int) else 0
        elif number == 14 and isinstance(value, tuple):
            entry = {n: v for n, _, v in _fields(data, value[0], value[0] + value[1])}
            key, text = entry.get(1), entry.get(2)
            if isinstance(key, tuple) and _text(data, key) == MIN_ONNXRUNTIME_KEY and isinstance(text, tuple):
                header.min_onnxruntime = _json_text(_text(data, text))
    if not header.ir_version:
        raise ValueError("no ir_version: not an ONNX model")
    return header


def read_header(source: str | os.PathLike[str] | bytes) -> ModelHeader | None:
    """The header of a model file or of serialized bytes; None when it is not a readable ONNX file
    (onnxruntime then says why). A file is memory-mapped: only the pages of top-level fields are read."""
    try:
        if isinstance(source, bytes):
            return parse_header(source)
        with open(source, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return parse_header(data)
    except (OSError, ValueError, KeyError):
        return None


def check_onnxruntime(source: str | os.PathLike[str] | bytes, installed: str, name: str) -> None:
    """Refuse, before onnxruntime tries, a model that needs a newer onnxruntime than `installed`.

    Raises CamError naming `name`, both versions and the two fixes: upgrade onnxruntime, or re-export
    the model at an opset the installed build runs.
    """
    header = read_header(source)
    needed, why = header.required() if header else ("", "")
    try:
        too_old = bool(needed) and version_tuple(installed) < version_tuple(needed)
    except ValueError:
        return  # an unparsable version (a custom build): let onnxruntime decide
    if not too_old:
        return
    if version_tuple(installed) < version_tuple(OLDEST_ONNXRUNTIME):
        fix = f"onnxruntime {installed} is older than the oldest gapcam supports ({OLDEST_ONNXRUNTIME})"
    else:
        fix = (
            f"or re-export it with `python -m export CHECKPOINT --opset {DEFAULT_OPSET}` "
            f"(onnxruntime {OLDEST_ONNXRUNTIME} and newer run it)"
        )
    raise CamError(
        f"{name}: this model needs onnxruntime >= {needed} ({why}), but onnxruntime {installed} is installed: "
        f"pip install -U 'onnxruntime>={needed}' (or onnxruntime-gpu); {fix}"
    )

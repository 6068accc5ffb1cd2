"""Model packages (contract 4), as the runtime reads them: layout, manifest, checks.

A package is a folder or a `.zip` holding `manifest.json`, `model.onnx`, a model card, test vectors
and sample overlays. The manifest lists the sha256 and size of every other file. `zoo` writes
packages; this module is the one reader, so every `CamSession` checks what it loads. A package is
untrusted input: archive entries that escape, links, unlisted or altered files are refused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from runtime.errors import CamError, check_format
from runtime.formats.files import limit_from_environment

FORMAT = "gapcam-package"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20
MODEL = "model.onnx"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_PATTERN = re.compile(r"^\d+\.\d+\.\d+$")
Opener = Callable[[], IO[bytes]]  # opens one package file for reading, in binary, only when called


def file_entry(data: bytes) -> dict[str, Any]:
    """How a manifest (and an index) records a file: its sha256 and size."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclass
class Manifest:
    """What a package holds and promises; `files` maps each file but the manifest to sha256 and size."""

    name: str  # lowercase letters, digits, '.', '_', '-'
    version: str  # X.Y.Z
    task: str  # "image-classification-cam"
    labels: list[str]  # class names in logit order
    input: dict[str, Any]  # {"name", "dtype", "shape": ["batch", C, H, W]}
    outputs: list[dict[str, Any]]  # [{"name": "logits", ...}, {"name": "features", ...}]
    preprocess: dict[str, Any]  # runtime.inputs.image.Preprocess as a dict
    files: dict[str, dict[str, Any]]  # relative path -> {"sha256", "size"}
    metrics: dict[str, Any] = field(default_factory=dict)  # measured accuracy and localization
    parity: dict[str, Any] = field(default_factory=dict)  # torch-vs-onnxruntime figures from export
    license: str = "unspecified"
    provenance: dict[str, Any] = field(default_factory=dict)  # checkpoint sha256, versions, opset, created
    precision: str = "fp32"  # "int8" for a quantized model
    quantization: dict[str, Any] = field(default_factory=dict)  # int8: settings and measured fidelity to the fp32 model
    min_onnxruntime: str = ""  # the oldest onnxruntime that runs the model, as its metadata says ("" in older packages)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> Manifest:
        """Parse and check the schema; every problem is a CamError naming `source` and the field."""
        try:
            data = json.loads(text)
        except ValueError as err:
            raise CamError(f"{source}: manifest is not valid JSON ({err})") from None
        check_format(data, FORMAT, FORMAT_VERSION, source, "gapcam package manifest")
        expected = {
            "name": str,
            "version": str,
            "task": str,
            "labels": list,
            "input": dict,
            "outputs": list,
            "preprocess": dict,
            "files": dict,
            "metrics": dict,
            "parity": dict,
            "license": str,
            "provenance": dict,
        }
        for key, kind in expected.items():
            if not isinstance(data.get(key), kind):
                raise CamError(f"{source}: manifest field {key!r} is missing or not a {kind.__name__}")
        if not NAME_PATTERN.match(data["name"]):
            raise CamError(f"{source}: manifest name {data['name']!r} is not a valid package name")
        if not VERSION_PATTERN.match(data["version"]):
            raise CamError(f"{source}: manifest version {data['version']!r} is not X.Y.Z")
        for tensor in [data["input"], *data["outputs"]]:
            if not (
                isinstance(tensor, dict)
                and isinstance(tensor.get("name"), str)
                and isinstance(tensor.get("dtype"), str)
                and isinstance(tensor.get("shape"), list)
            ):
                raise CamError(f"{source}: manifest input and outputs need a name, a dtype and a shape list each, got {tensor!r:.100}")
        if MODEL not in data["files"]:
            raise CamError(f"{source}: manifest lists no {MODEL}")
        for name, entry in data["files"].items():
            if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(entry.get("size"), int)):
                raise CamError(f"{source}: manifest entry for {name!r} needs sha256 and size")
        # packages made before INT8 models (precision, quantization) or before min_onnxruntime lack them
        optional = {"precision": (str, "fp32"), "quantization": (dict, {}), "min_onnxruntime": (str, "")}
        for key, (kind, default) in optional.items():
            data.setdefault(key, default)
            if not isinstance(data[key], kind):
                raise CamError(f"{source}: manifest field {key!r} is not a {kind.__name__}")
        return cls(**{key: data[key] for key in [*expected, *optional]})


def safe_member_name(name: str, source: str) -> str:
    """A relative POSIX path inside the package, or a CamError: no absolute paths, drives or '..'."""
    path = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or path.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise CamError(f"{source}: archive entry {name!r} escapes the package folder; refused")
    return str(path)


MAX_FILE_BYTES = 512 << 20  # one file of a package: a ResNet-50-GAP is about 100 MB, VGG16-GAP about 60 MB
MAX_TOTAL_BYTES = 1 << 30  # everything a package holds
CHUNK = 1 << 20  # bytes hashed at a time


def _file_opener(path: Path) -> Opener:
    return lambda: path.open("rb")


class Package:
    """An opened package whose files all match its manifest; read-only access to their bytes.

    A package is untrusted, its manifest included: every size is checked, against the manifest
    and against absolute limits (GAPCAM_MAX_PACKAGE_FILE_BYTES, GAPCAM_MAX_PACKAGE_BYTES), before
    anything but the manifest is read, so an archive that would inflate to more (a zip bomb, or a
    manifest declaring a huge file) is refused without being inflated. Files are hashed as they
    stream, never held whole, and `read` checks a file's sha256 again as it returns it.
    Raises CamError naming the package and the failed check.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.max_file_bytes = limit_from_environment("GAPCAM_MAX_PACKAGE_FILE_BYTES", MAX_FILE_BYTES, "bytes")
        self.max_total_bytes = limit_from_environment("GAPCAM_MAX_PACKAGE_BYTES", MAX_TOTAL_BYTES, "bytes")
        if self.path.is_dir():
            self._check(self._folder_entries())
        elif self.path.is_file() and zipfile.is_zipfile(self.path):
            with self._archive() as archive:
                self._check(self._zip_entries(archive))
        else:
            raise CamError(f"{self.path}: not a package folder or .zip archive")

    @contextlib.contextmanager
    def _archive(self) -> Iterator[zipfile.ZipFile]:
        try:
            with zipfile.ZipFile(self.path) as archive:
                yield archive
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
            raise CamError(f"{self.path}: damaged or truncated archive ({err})") from None

    def _folder_entries(self) -> dict[str, tuple[int, Opener]]:
        entries: dict[str, tuple[int, Opener]] = {}
        for item in sorted(self.path.rglob("*")):
            if item.is_symlink():
                raise CamError(f"{self.path}: {item.relative_to(self.path)} is a link; packages hold plain files only")
            if item.is_file():
                entries[item.relative_to(self.path).as_posix()] = (item.stat().st_size, _file_opener(item))
        return entries

    def _zip_entries(self, archive: zipfile.ZipFile) -> dict[str, tuple[int, Opener]]:
        entries: dict[str, tuple[int, Opener]] = {}
        for info in archive.infolist():
            name = safe_member_name(info.filename, str(self.path))
            if stat.S_ISLNK(info.external_attr >> 16):
                raise CamError(f"{self.path}: archive entry {info.filename!r} is a link; refused")
            if info.is_dir():
                continue
            if name in entries:
                raise CamError(f"{self.path}: archive holds {name!r} twice; refused")
            entries[name] = (info.file_size, functools.partial(archive.open, info))
        return entries

    def _check(self, entries: dict[str, tuple[int, Opener]]) -> None:
        """Read the manifest; check every entry's presence and size against it and the limits; then hash."""
        if MANIFEST not in entries:
            raise CamError(f"{self.path}: not a gapcam package (no {MANIFEST})")
        if entries[MANIFEST][0] > MAX_MANIFEST_BYTES:
            raise CamError(f"{self.path}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes; refused")
        with entries[MANIFEST][1]() as stream:
            self._manifest_bytes = stream.read(MAX_MANIFEST_BYTES + 1)
        self.manifest = Manifest.from_json(self._manifest_bytes, str(self.path))
        listed = self.manifest.files
        unlisted = sorted(set(entries) - set(listed) - {MANIFEST})
        if unlisted:
            raise CamError(f"{self.path}: files not in the manifest: {unlisted}")
        for name, entry in listed.items():
            if entry["size"] > self.max_file_bytes:
                raise CamError(
                    f"{self.path}: {name} is declared at {entry['size']} bytes, more than the limit of "
                    f"{self.max_file_bytes} a file (GAPCAM_MAX_PACKAGE_FILE_BYTES); refused unread"
                )
            if name not in entries:
                raise CamError(f"{self.path}: {name} is listed in the manifest but missing")
            if entries[name][0] != entry["size"]:
                raise CamError(
                    f"{self.path}: {name} has {entries[name][0]} bytes, the manifest says {entry['size']} (checksum check failed)"
                )
        total = sum(entry["size"] for entry in listed.values())
        if total > self.max_total_bytes:
            raise CamError(
                f"{self.path}: the files add up to {total} bytes, more than the limit of {self.max_total_bytes} "
                "(GAPCAM_MAX_PACKAGE_BYTES); refused unread"
            )
        for name in listed:
            self._hashed(name, entries[name][1])

    def _hashed(self, name: str, opener: Opener, keep: bool = False) -> bytes:
        """Stream a file through sha256, reading at most its declared size plus one byte; its bytes if `keep`."""
        entry = self.manifest.files[name]
        digest, parts, seen = hashlib.sha256(), [], 0
        try:
            with opener() as stream:
                while block := stream.read(min(CHUNK, entry["size"] + 1 - seen)):
                    digest.update(block)
                    seen += len(block)
                    if keep:
                        parts.append(block)
                    if seen > entry["size"]:
                        break
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
            raise CamError(f"{self.path}: {name} is damaged or truncated ({err})") from None
        if seen != entry["size"] or digest.hexdigest() != entry["sha256"]:
            raise CamError(f"{self.path}: {name} does not match its sha256 in the manifest (checksum check failed)")
        return b"".join(parts)

    def read(self, name: str) -> bytes:
        """A file's bytes, checked against the manifest again as they are read."""
        if name not in self.manifest.files and name != MANIFEST:
            raise CamError(f"{self.path}: no file {name!r} in the package")
        if name == MANIFEST:
            return self._manifest_bytes
        if self.path.is_dir():
            return self._hashed(name, _file_opener(self.path / name), keep=True)
        with self._archive() as archive:
            return self._hashed(name, functools.partial(archive.open, name), keep=True)

    def names(self) -> list[str]:
        return sorted([*self.manifest.files, MANIFEST])

    @property
    def reference(self) -> str:
        """`name@version`, as `CamSession`, `zoo fetch` and indexes name a package."""
        return f"{self.manifest.name}@{self.manifest.version}"

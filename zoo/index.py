"""Package indexes: a JSON file or URL listing packages with version, URL, sha256 and size."""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

from runtime.errors import check_format, raises_only
from runtime.formats.files import write_text_atomic
from runtime.formats.package import VERSION_PATTERN, Package, file_entry, version_key
from runtime.formats.store import DEFAULT_INDEX, split_reference
from zoo.errors import ZooError

FORMAT = "gapcam-index"
FORMAT_VERSION = 1
MAX_INDEX_BYTES = 10 * 1024 * 1024
REQUIRED = (("name", str), ("version", str), ("url", str), ("sha256", str), ("size", int))


def is_url(location: str) -> bool:
    return urllib.parse.urlparse(location).scheme in ("http", "https", "file")


def open_location(location: str, timeout: float) -> BinaryIO:
    """A readable binary stream for an http(s) or file URL, or a local path."""
    if is_url(location):
        return urllib.request.urlopen(location, timeout=timeout)
    return open(location, "rb")


def read_index(location: str | os.PathLike | None = None, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The entries of an index at a path or URL (default: the index that ships with gapcam)."""
    location = str(location or DEFAULT_INDEX)
    try:
        with open_location(location, timeout) as stream:
            text = stream.read(MAX_INDEX_BYTES + 1)
    except (OSError, ValueError) as err:
        raise ZooError(f"{location}: cannot read the index ({err})") from None
    if len(text) > MAX_INDEX_BYTES:
        raise ZooError(f"{location}: index larger than {MAX_INDEX_BYTES} bytes; refused")
    return parse_index(text, location)


def parse_index(text: str | bytes, source: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ZooError(f"{source}: index is not valid JSON ({err})") from None
    check_format(data, FORMAT, FORMAT_VERSION, source, "gapcam index", ZooError)
    if not isinstance(data.get("packages"), list):
        raise ZooError(f"{source}: index has no 'packages' list")
    for entry in data["packages"]:
        for key, kind in REQUIRED:
            if not isinstance(entry, dict) or not isinstance(entry.get(key), kind):
                raise ZooError(f"{source}: index entry {entry!r} needs {key!r} ({kind.__name__})")
    return data["packages"]


def index_name(location: str | os.PathLike | None) -> str:
    """How messages name an index: "the index URL", or "the default index"."""
    return f"the index {location}" if location else "the default index"


def select(entries: list[dict[str, Any]], reference: str, source: str) -> dict[str, Any]:
    """The entry for NAME (newest version) or NAME@VERSION; `source` names the index (`index_name`)."""
    name, version = split_reference(reference)
    matches = [e for e in entries if e["name"] == name and VERSION_PATTERN.match(e["version"])]
    if version is not None:
        matches = [e for e in matches if e["version"] == version]
    if not matches:
        known = sorted({f"{e['name']}@{e['version']}" for e in entries})
        raise ZooError(f"{reference}: not in {source} (it lists {known})")
    return max(matches, key=lambda e: version_key(e["version"]))


def resolve_url(url: str, index_location: str | os.PathLike | None) -> str:
    """An entry's URL, relative ones taken against the index's own location."""
    location = str(index_location or DEFAULT_INDEX)
    if is_url(url) or Path(url).is_absolute():
        return url
    if is_url(location):
        return urllib.parse.urljoin(location, url)
    return str(Path(location).parent / url)


@raises_only(ZooError)
def publish(archive: str | os.PathLike, index_path: str | os.PathLike, url: str | None = None) -> dict[str, Any]:
    """Add (or replace) a package archive's entry in an index file, creating the index if needed.

    Raises ZooError when the archive is no valid package or the index is unreadable.
    """
    archive, index_path = Path(archive), Path(index_path)
    if archive.suffix != ".zip":
        raise ZooError(f"{archive}: publish takes a package .zip archive")
    manifest = Package(archive).manifest
    if url is None:
        url = os.path.relpath(archive.resolve(), index_path.resolve().parent).replace(os.sep, "/")
    entry = {
        "name": manifest.name,
        "version": manifest.version,
        "url": url,
        **file_entry(archive.read_bytes()),
        "task": manifest.task,
        "license": manifest.license,
        "labels": manifest.labels,
    }
    entries = read_index(index_path) if index_path.exists() else []
    entries = [e for e in entries if (e["name"], e["version"]) != (entry["name"], entry["version"])] + [entry]
    entries.sort(key=lambda e: (e["name"], version_key(e["version"])))
    write_text_atomic(index_path, json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "packages": entries}, indent=2) + "\n")
    return entry

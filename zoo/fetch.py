"""`python -m zoo fetch NAME[@VERSION]`: download, verify, unpack into the local store, atomically.

Nothing is used before its sha256 matches the index; the size in the index caps the download; a
transfer that breaks off leaves nothing behind in the store.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import sys
import urllib.response
from collections.abc import Callable
from pathlib import Path

import click

from runtime.errors import CamError, raises_only
from runtime.formats.files import atomic_folder, atomic_path
from runtime.formats.package import Package
from runtime.formats.store import gapcam_home, store_path
from zoo.errors import ZooError
from zoo.index import index_name, open_location, read_index, resolve_url, select

CHUNK = 1 << 16
URL_RESPONSES = (http.client.HTTPResponse, urllib.response.addinfourl)  # urlopen's (http(s), file URLs): with headers


def download(url: str, dest: Path, size: int, sha256: str, timeout: float = 60.0, progress: bool = True) -> None:
    """Stream `url` to `dest` (atomically) only if it has exactly `size` bytes with this sha256."""
    digest, received = hashlib.sha256(), 0
    try:
        with atomic_path(dest) as tmp, open(tmp, "wb") as out, open_location(url, timeout) as response:
            announced = response.headers.get("Content-Length") if isinstance(response, URL_RESPONSES) else None
            if announced is not None and int(announced) > size:
                raise ZooError(f"{url}: server announces {announced} bytes, the index allows {size}; refused")
            with click.progressbar(length=size, label=dest.name, file=sys.stderr if progress else io.StringIO()) as bar:
                while chunk := response.read(CHUNK):
                    received += len(chunk)
                    if received > size:
                        raise ZooError(f"{url}: more than the {size} bytes the index lists; download refused")
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
            if received != size:
                raise ZooError(f"{url}: truncated download ({received} of {size} bytes); nothing kept")
            if digest.hexdigest() != sha256:
                raise ZooError(f"{url}: sha256 {digest.hexdigest()} does not match the index's {sha256}; nothing kept")
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise ZooError(f"{url}: download failed ({err.__class__.__name__}: {err}); nothing kept") from None


def _cached(dest: Path, name: str, version: str) -> bool:
    """Whether the store already holds this package, intact."""
    if not dest.is_dir():
        return False
    try:
        manifest = Package(dest).manifest
    except CamError:
        return False
    return (manifest.name, manifest.version) == (name, version)


def unpack(archive: Path, dest: Path, name: str, version: str) -> None:
    """Check the archive like any package, then place its files at `dest` in one rename."""
    package = Package(archive)
    if (package.manifest.name, package.manifest.version) != (name, version):
        raise ZooError(f"{archive}: holds {package.reference}, the index promised {name}@{version}; refused")
    with atomic_folder(dest, {member: package.read(member) for member in package.names()}):
        pass  # the archive was checked above; nothing is left to check before the rename


@raises_only(ZooError)
def fetch(
    reference: str,
    index: str | os.PathLike | None = None,
    *,
    timeout: float = 60.0,
    progress: bool = True,
    log: Callable[[str], None] = lambda line: None,
) -> Path:
    """Make NAME[@VERSION] from `index` available in the local store; returns its folder.

    Raises ZooError when the index or the download fails, or the package fails any check.
    """
    entry = select(read_index(index, timeout), reference, index_name(index))
    name, version = entry["name"], entry["version"]
    dest = store_path(name, version)
    if _cached(dest, name, version):
        log(f"{name}@{version}: cached copy in {dest} verifies; reusing it")
        return dest
    downloads = gapcam_home() / "downloads"
    archive = downloads / f"{name}-{version}.zip"
    url = resolve_url(entry["url"], index)
    log(f"{name}@{version}: fetching {url} ({entry['size']} bytes)")
    try:
        download(url, archive, entry["size"], entry["sha256"], timeout, progress)
        unpack(archive, dest, name, version)
    finally:
        archive.unlink(missing_ok=True)
    log(f"{name}@{version}: verified and stored in {dest}")
    return dest

"""Where a model comes from: a file, a package folder or archive, or a package name in the local store
(where `zoo fetch` puts packages) or bundled with gapcam."""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

from runtime.errors import CamError
from runtime.formats.package import MANIFEST, NAME_PATTERN, VERSION_PATTERN, Package, version_key

BUNDLED = Path(__file__).parent.parent / "models"  # packages that ship inside gapcam, as <name>-<version>.zip
DEFAULT_INDEX = BUNDLED / "index.json"  # the zoo's default index: lists the bundled packages


def gapcam_home() -> Path:
    """The local store: $GAPCAM_HOME, else the user's cache folder (XDG, macOS Caches, LOCALAPPDATA)."""
    if os.environ.get("GAPCAM_HOME"):
        return Path(os.environ["GAPCAM_HOME"])
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "gapcam"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "gapcam"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gapcam"


def store_path(name: str, version: str) -> Path:
    """Where `zoo fetch` puts a package: GAPCAM_HOME/packages/NAME/VERSION (an unpacked folder)."""
    return gapcam_home() / "packages" / name / version


def split_reference(reference: str) -> tuple[str, str | None]:
    """'shapes@1.0.0' -> ('shapes', '1.0.0'); 'shapes' -> ('shapes', None)."""
    name, _, version = reference.partition("@")
    return name, version or None


def find_package(reference: str) -> Path | None:
    """The newest (or the named) version of a package, in the local store first, then bundled."""
    name, version = split_reference(reference)
    if not NAME_PATTERN.match(name) or (version is not None and not VERSION_PATTERN.match(version)):
        return None
    candidates: dict[str, Path] = {}
    for path in sorted(BUNDLED.glob(f"{name}-*.zip")):
        candidates[path.stem[len(name) + 1 :]] = path
    store = gapcam_home() / "packages" / name
    if store.is_dir():
        for path in store.iterdir():
            if VERSION_PATTERN.match(path.name) and (path / MANIFEST).is_file():
                candidates[path.name] = path  # the store wins over a bundled copy of the same version
    candidates = {v: p for v, p in candidates.items() if VERSION_PATTERN.match(v)}
    if version is not None:
        return candidates.get(version)
    return candidates[max(candidates, key=version_key)] if candidates else None


def resolve_model(model: str | os.PathLike[str]) -> tuple[Path, Package | None]:
    """(path, package or None) behind `model`: an `.onnx` file, a package folder or archive, or a
    package name (`shapes`, `shapes@1.0.0`) in the local store or bundled with gapcam.

    Raises CamError when `model` is none of these, or a package fails its checks.
    """
    path = Path(model)
    if path.is_dir() or (path.is_file() and zipfile.is_zipfile(path)):
        return path, Package(path)
    if path.is_file():
        return path, None
    found = find_package(str(model))
    if found is not None:
        return found, Package(found)
    raise CamError(
        f"{model}: no such model file or package folder, and no package of that name in {gapcam_home()} "
        f"or bundled with gapcam (try `python -m zoo fetch {model}`)"
    )

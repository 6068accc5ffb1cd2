"""Atomic file writing: a reader never sees a half-written output file."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from runtime.errors import CamError


def default_mode(directory: bool = False) -> int:
    """The permissions a plain open() or mkdir() would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds.

    The temporary name ends with `path`'s own suffix, for writers that choose a format by it (video).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, default_mode())  # mkstemp makes 0600 files; outputs are ordinary files
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def limit_from_environment(variable: str, default: int, unit: str) -> int:
    """A positive whole-number limit (pixels, bytes) from the environment variable, else the default.

    Raises CamError naming the variable when it holds anything else.
    """
    text = os.environ.get(variable, "")
    try:
        value = int(text) if text else default
    except ValueError:
        raise CamError(f"{variable} must be a whole number of {unit}, got {text!r}") from None
    if value < 1:
        raise CamError(f"{variable} must be positive, got {value}")
    return value


def check_writable(path: str | os.PathLike[str], what: str) -> None:
    """Fail now, not after the work, when `path` (a file to write) cannot be written: its folder is
    made if missing and a temporary file is created in it and removed. Raises CamError naming it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=f".{path.name}.", suffix=".probe", dir=path.parent):
            pass
    except OSError as err:
        raise CamError(f"{path}: cannot write the {what} there ({err.strerror or err})") from None
    if path.is_dir():
        raise CamError(f"{path}: cannot write the {what} there (a folder of that name exists)")


def read_text_file(path: str | os.PathLike[str], what: str, limit: int = 10 << 20) -> str:
    """The UTF-8 text of a small input file (a model card, metrics, labels).

    Only regular files are read: a FIFO or device given as a path would block or never end.
    Raises CamError naming the file when it is not a regular file, is larger than `limit`, or
    is not UTF-8 text.
    """
    path = Path(path)
    try:
        info = path.stat()
    except OSError as err:
        raise CamError(f"{path}: cannot read the {what} ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise CamError(f"{path}: the {what} must be a regular file")
    if info.st_size > limit:
        raise CamError(f"{path}: the {what} has {info.st_size} bytes, more than {limit}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CamError(f"{path}: the {what} is not UTF-8 text ({err.reason})") from None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_folder(dest: str | os.PathLike[str], files: dict[str, bytes]) -> Iterator[Path]:
    """Write `files` (relative path -> bytes) into a hidden folder beside `dest` and yield it for
    checks; only if the block succeeds does it replace `dest`, in one rename."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        os.chmod(staging, default_mode(directory=True))  # mkdtemp makes 0700 folders
        for name, data in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        yield staging
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

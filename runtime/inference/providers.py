"""onnxruntime sessions: which execution providers to ask for (CUDA when it truly works, else the
CPU), and opening a model file or bytes with one-line errors."""

from __future__ import annotations

import ctypes
import importlib
import re
import sys
from collections.abc import Sequence
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING

from runtime.errors import CamError, first_line
from runtime.inference.compat import check_onnxruntime, version_tuple

if TYPE_CHECKING:
    import onnxruntime  # ships no types (no py.typed): its names are Any to mypy

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Distributions that each install the same `onnxruntime` folder: two of them overwrite each other.
ONNXRUNTIME_BUILDS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
    "onnxruntime-rocm",
    "onnxruntime-silicon",
    "onnxruntime-training",
)
INSTALL_HINT = "pip install 'gapcam[cpu]' (or 'gapcam[gpu]' for CUDA)"


def installed_versions(names: Sequence[str]) -> list[str]:
    """'name version' of each of these distributions that is installed, in the order given."""
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return found


def onnxruntime_builds() -> list[str]:
    """'name version' of every installed onnxruntime build."""
    return installed_versions(ONNXRUNTIME_BUILDS)


def _import_onnxruntime() -> ModuleType:
    """onnxruntime, or a CamError saying what to install or remove.

    Two builds (say onnxruntime and onnxruntime-gpu) share one folder: pip reports no conflict, yet
    whichever was installed last has overwritten parts of the other, and removing either breaks
    both (`module 'onnxruntime' has no attribute 'SessionOptions'`).
    """
    builds = onnxruntime_builds()
    if len(builds) > 1:
        names = [build.split()[0] for build in builds]
        raise CamError(
            f"{' and '.join(builds)} are installed over each other in one onnxruntime folder; keep one: "
            f"pip uninstall -y {' '.join(names)} && {INSTALL_HINT}"
        )
    try:
        module = importlib.import_module("onnxruntime")
    except Exception as err:  # ImportError, or SystemError from a build compiled for numpy 1 beside numpy 2
        raise CamError(f"onnxruntime is not installed or does not load ({first_line(err)}): {_load_hint(builds)}") from None
    if not hasattr(module, "InferenceSession"):
        build = builds[0].split()[0] if builds else "onnxruntime"
        raise CamError(f"the onnxruntime folder is damaged (left over from another build?): pip install --force-reinstall {build}")
    return module


def _load_hint(builds: list[str]) -> str:
    """What to do when onnxruntime does not import: onnxruntime before 1.19 was built for numpy 1 and
    fails to import beside numpy 2 (measured: 1.16.3 raises SystemError); else install it."""
    numpy_version = installed_versions(["numpy"])
    try:
        numpy_1_build = bool(builds) and version_tuple(builds[0].split()[1]) < (1, 19, 0)
        numpy_2 = bool(numpy_version) and version_tuple(numpy_version[0].split()[1]) >= (2, 0, 0)
    except ValueError:  # a version that is not MAJOR.MINOR...: nothing to conclude
        return INSTALL_HINT
    if numpy_1_build and numpy_2:
        return (
            f"{builds[0]} was built for numpy 1 and does not load beside {numpy_version[0]}: pip install 'numpy<2' (or onnxruntime>=1.19)"
        )
    return INSTALL_HINT


ort = _import_onnxruntime()


def cuda_driver_present() -> bool:
    """Whether the NVIDIA driver library loads: without it onnxruntime's CUDA provider cannot start,
    and trying would only print a loader error before falling back to the CPU."""
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


def onnxruntime_version() -> str:
    return str(ort.__version__)


def choose_providers(providers: Sequence[str] | None) -> list[str]:
    """CUDA then CPU when onnxruntime offers CUDA and a driver is present, else CPU; an explicit list is checked as given.

    Raises CamError naming the providers this onnxruntime does not offer.
    """
    available = ort.get_available_providers()
    if providers is None:
        return [CUDA, CPU] if CUDA in available and cuda_driver_present() else [CPU]
    unknown = [p for p in providers if p not in available]
    if unknown:
        raise CamError(f"providers: {unknown} not available in this onnxruntime (available: {available})")
    return list(providers)


# Where in onnxruntime's sources a load error was raised: "/onnxruntime_src/.../model.cc:149 onnxruntime::Model::Model(...) ",
# or with a return type: ".../model_load_utils.h:46 void onnxruntime::model_load_utils::ValidateOpsetForDomain(...) "
SOURCE_LOCATION = re.compile(r"[/\\]\S*?\.(?:cc|cpp|h):\d+ (?:[\w:~<>*&]+ )*?[\w:~<>]+\([^)]*\)\s*")


def onnxruntime_reason(err: BaseException) -> str:
    """onnxruntime's whole error message on one line, without the C++ source location and signature
    it puts before the reason ("Unsupported model IR version: 10, max supported IR version: 9")."""
    return " ".join(SOURCE_LOCATION.sub(" ", str(err)).split()) or err.__class__.__name__


def open_inference_session(source: str | bytes, providers: Sequence[str] | None, name: str) -> onnxruntime.InferenceSession:
    """An onnxruntime session for a model path or serialized bytes, on `choose_providers(providers)`.

    A model given as bytes (a package's, or one being exported) cannot follow external-data
    references to other files on disk. Raises CamError naming `name` when the model does not load,
    or needs a newer onnxruntime than this one (`runtime.inference.compat.check_onnxruntime`, before loading).
    """
    check_onnxruntime(source, onnxruntime_version(), name)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # a CUDA provider that cannot start falls back; callers report get_providers()
    # onnxruntime's threads otherwise spin after each call, taking the cores from the decoding and
    # numpy work that follow it (measured in docs/benchmarks.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(source, sess_options=options, providers=choose_providers(providers))
    except Exception as err:  # onnxruntime raises several unrelated types for unreadable files
        reason = onnxruntime_reason(err)
        if isinstance(source, bytes) and "external" in reason.lower():
            raise CamError(f"{name}: the ONNX model references external data; a package holds one self-contained ONNX file") from None
        raise CamError(f"{name}: not a loadable ONNX model ({reason})") from None

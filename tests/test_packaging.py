"""The installed environment: one onnxruntime distribution, never two side by side."""
from importlib import metadata


def installed(name):
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def test_onnxruntime_and_onnxruntime_gpu_are_not_both_installed():
    assert installed("onnxruntime") + installed("onnxruntime-gpu") == 1

"""The dependency rules of the design: who may import what (runtime at the bottom, never torch there)."""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "runtime": {"numpy", "onnxruntime", "PIL", "click", "runtime"},
    "zoo": {"numpy", "click", "runtime", "zoo"},
    "train": {"torch", "torchvision", "numpy", "PIL", "click", "tqdm", "matplotlib", "runtime", "train"},
    "export": {"torch", "torchvision", "onnx", "onnxruntime", "numpy", "click", "train", "runtime", "export"},
    # the `gapcam` command loads the others' commands by name (importlib), so it imports none of them directly
    "gapcam": {"click", "numpy", "pytriton", "runtime", "gapcam"},
}


def imported_top_levels(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__"}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_design_allows(package):
    for path in sorted((ROOT / package).rglob("*.py")):
        extra = imported_top_levels(path) - ALLOWED[package]
        assert not extra, f"{path.relative_to(ROOT)} imports {sorted(extra)}"


def imported_modules(path: Path) -> set[str]:
    """Full dotted names of what a file imports (`from runtime.maps.boxes import cam_box` -> runtime.maps.boxes)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


# One home per contract: the modules inside `runtime` that hold each idea, and who may reach them.
RUNTIME_RULES = {
    "onnxruntime": {"runtime/inference/providers.py"},  # the one place that opens onnxruntime sessions
    "onnxruntime.quantization": {"export/int8.py"},  # export's only use of onnxruntime: its quantization tools
    # where a model comes from: the session resolves names; the zoo writes into the store and reads the default index
    "runtime.formats.store": {"runtime/inference/session.py", "zoo/fetch.py", "zoo/index.py"},
}
LEAF_MODULES = {  # the math and formats at the bottom import no session, store or provider
    "runtime/maps/boxes.py": {"numpy", "runtime.errors"},
    "runtime/maps/cam.py": {"numpy", "runtime.errors"},
    "runtime/formats/onnx_model.py": {"numpy", "runtime.maps.boxes", "runtime.inference.compat", "runtime.errors", "runtime.inputs.image"},
    "runtime/inference/compat.py": {"runtime.errors"},  # which onnxruntime runs which model: read before any session opens
    "runtime/formats/package.py": {"runtime.errors", "runtime.formats.files"},
    "train/checkpoint.py": {"torch", "runtime", "runtime.errors", "runtime.formats.files", "runtime.inputs.image", "train.errors",
                            "train.models", "train.loop", "train.data", "train.recipes"},
}


@pytest.mark.parametrize("module", sorted(RUNTIME_RULES))
def test_each_contract_has_one_home(module):
    importers = {
        str(path.relative_to(ROOT)) for package in ALLOWED for path in (ROOT / package).rglob("*.py")
        if module in imported_modules(path)
    }
    assert importers == RUNTIME_RULES[module]


@pytest.mark.parametrize("name", sorted(LEAF_MODULES))
def test_leaf_modules_import_only_their_few_neighbours(name):
    assert imported_modules(ROOT / name) - set(sys.stdlib_module_names) - {"__future__"} <= LEAF_MODULES[name]

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
    "export": {"torch", "torchvision", "onnx", "numpy", "click", "train", "runtime", "export"},
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

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
    # (and `gapcam web` keeps its npm cache in the same home)
    "runtime.formats.store": {"runtime/inference/session.py", "zoo/fetch.py", "zoo/index.py", "gapcam/web.py"},
}
LEAF_MODULES = {  # the math and formats at the bottom import no session, store or provider
    # the math: numpy, and the deprecation helper that keeps 0.1's names of moved functions working
    "runtime/maps/cam.py": {"numpy", "runtime.deprecation"},
    "runtime/maps/boxes.py": {"numpy", "runtime.deprecation", "runtime.errors", "runtime.maps.cam"},
    # the registry knows the math and the graph's output names, never a session
    "runtime/maps/methods.py": {
        "numpy",
        "runtime.deprecation",
        "runtime.errors",
        "runtime.formats.onnx_model",
        "runtime.maps.cam",
        "runtime.maps.forward",
    },
    # the methods that need more of the model are given its forward pass as a function: they open no session
    "runtime/maps/forward.py": {"numpy", "runtime.errors", "runtime.formats.onnx_model", "runtime.maps.activations", "runtime.maps.cam"},
    "runtime/maps/activations.py": {"numpy"},
    "runtime/formats/onnx_model.py": {"numpy", "runtime.maps.boxes", "runtime.inference.compat", "runtime.errors", "runtime.inputs.image"},
    "runtime/inference/compat.py": {"runtime.errors"},  # which onnxruntime runs which model: read before any session opens
    "runtime/formats/package.py": {"runtime.errors", "runtime.formats.files"},
    # the checkpoint is a schema the training loop fills in: it knows the model, never the loop, data or recipes
    "train/checkpoint.py": {
        "torch",
        "runtime.deprecation",
        "runtime.errors",
        "runtime.formats.files",
        "runtime.inputs.image",
        "train.errors",
        "train.models",
    },
}


@pytest.mark.parametrize("module", sorted(RUNTIME_RULES))
def test_each_contract_has_one_home(module):
    importers = {
        str(path.relative_to(ROOT)) for package in ALLOWED for path in (ROOT / package).rglob("*.py") if module in imported_modules(path)
    }
    assert importers == RUNTIME_RULES[module]


@pytest.mark.parametrize("name", sorted(LEAF_MODULES))
def test_leaf_modules_import_only_their_few_neighbours(name):
    # The standard library's submodules (collections.abc) are the standard library; numpy.typing is numpy.
    imported = {module for module in imported_modules(ROOT / name) if module.split(".")[0] not in sys.stdlib_module_names}
    assert {"numpy" if module.startswith("numpy.") else module for module in imported} <= LEAF_MODULES[name]


def test_int8_quantizes_the_images_its_caller_gives():
    """export.int8 never reads train's datasets: export.recipe_data finds a checkpoint's own images for the CLI."""
    assert not {name for name in imported_modules(ROOT / "export/int8.py") if name.split(".")[0] == "train"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(packages) -> dict[str, set[str]]:
    """{module: the modules of `packages` it imports}, from the AST (imports inside functions too);
    `from a.b import c` is an edge to a.b.c where that is a module, else to a.b."""
    files = {module_name(path): path for package in packages for path in (ROOT / package).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the file's package, one level up per extra dot
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [node.module])])
                edges |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names}
        graph[name] = {edge for edge in edges if edge in files and edge != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search; a module on the current path closes a cycle)."""
    done, path = set(), []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        path.append(node)
        for neighbour in sorted(graph.get(node, ())):
            cycle = visit(neighbour)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    return next((cycle for node in sorted(graph) if (cycle := visit(node))), None)


def test_the_cycle_finder_names_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_imports_itself_through_others():
    """Dependencies run one way inside packages too, with no exceptions: a cycle makes import order matter
    and hides which module is the schema (the checkpoint imported the loop that fills it in)."""
    graph = import_graph(sorted(ALLOWED))
    assert {"train.loop", "train.checkpoint", "export.int8", "runtime.inference.session"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)

"""The test tiers: which tests are slow, and the check that the fast tier imports no torch.

`make test-fast` runs `-m "not slow and not serve and not browser and not compat"` with torch made
unimportable (tests/no_torch/sitecustomize.py on PYTHONPATH). A test is marked slow here when its
module imports torch (or train, export, torchcam, pytorch_grad_cam, which do) when it is imported, or
when it uses a fixture that trains (`tiny_checkpoint`, and so `tiny_model`, `exported_onnx`...). A
test that imports torch inside its body, or runs `python -m train` or `-m export`, is marked slow
by hand; the blocker fails the fast tier where one is not. tests/conftest.py imports these hooks.
"""

from __future__ import annotations

import ast
import functools
import itertools
import sys
from pathlib import Path

import pytest

TORCH_PACKAGES = frozenset({"torch", "torchvision", "torchcam", "pytorch_grad_cam", "train", "export"})  # each imports torch
TRAINING_FIXTURES = frozenset({"tiny_checkpoint"})  # item.fixturenames lists the fixtures a test uses through others too
OTHER_TIERS = ("serve", "browser", "compat")


@functools.cache
def imports_torch(path: Path) -> bool:
    """Whether importing the test module at `path` imports one of TORCH_PACKAGES (imports inside its functions aside)."""

    def visit(node: ast.AST) -> bool:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return False
        if isinstance(node, ast.Import):
            return any(alias.name.partition(".")[0] in TORCH_PACKAGES for alias in node.names)
        if isinstance(node, ast.ImportFrom):
            return node.level == 0 and (node.module or "").partition(".")[0] in TORCH_PACKAGES
        return any(visit(child) for child in ast.iter_child_nodes(node))

    return visit(ast.parse(path.read_bytes(), filename=str(path)))


@functools.cache
def _leaves_out_slow(expression: str) -> bool:
    try:  # pytest's own matcher, so that `-m` means here what it means to pytest
        from _pytest.mark import MarkMatcher
        from _pytest.mark.expression import Expression

        compiled = Expression.compile(expression)
        tiers = [("slow", *others) for n in range(len(OTHER_TIERS) + 1) for others in itertools.combinations(OTHER_TIERS, n)]
        return not any(compiled.evaluate(MarkMatcher.from_markers([getattr(pytest.mark, name).mark for name in tier])) for tier in tiers)
    except (ImportError, AttributeError, SyntaxError):  # pytest's internals moved: collect everything, the blocker still guards
        return False


def leaves_out_slow(config: pytest.Config) -> bool:
    """Whether `-m` deselects every slow test, whatever other tier it is in: the fast tier."""
    expression = config.getoption("markexpr", "") or ""
    return bool(expression.strip()) and _leaves_out_slow(expression)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """In the fast tier a module that imports torch is not even imported: collecting it would import torch."""
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_") and leaves_out_slow(config):
        return True if imports_torch(collection_path) else None
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if imports_torch(Path(item.path)) or TRAINING_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


def torch_in_fast_tier() -> list[str]:
    """What imported torch, or tried to under the blocker, in this process."""
    blocker = sys.modules.get("sitecustomize")
    tried = [f"{test or 'collection'}: import {name}" for name, test in getattr(blocker, "attempts", [])]
    return tried + [f"{name} is imported" for name in ("torch", "torchvision") if sys.modules.get(name) is not None]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if leaves_out_slow(session.config) and torch_in_fast_tier():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    found = torch_in_fast_tier() if leaves_out_slow(config) else []
    if found:
        terminalreporter.section("torch in the fast tier", sep="=", red=True)
        for line in found:
            terminalreporter.line(f"{line} (mark the test slow)")

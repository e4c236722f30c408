"""Library code never imports the testing package: ``megatron_optiml.testing`` holds what only
tests and benchmarks use (multi-rank harness, workloads, fault injection)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTING = "megatron_optiml.testing"
# Library code: the package outside its testing sub-package, the two CLI packages, train.py.
LIBRARY = ("megatron_optiml", "data_prep", "checkpoints_conversion")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_testing(name: str) -> bool:
    return name == TESTING or name.startswith(TESTING + ".")


def imports_of_testing(source: str, module: str, is_package: bool = False) -> list[str]:
    """The ``megatron_optiml.testing`` modules that ``source`` (module ``module``) imports:
    ``import``, ``from ... import`` (relative ones resolved), ``importlib.import_module`` /
    ``__import__`` with a literal name."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if _is_testing(a.name)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            if _is_testing(base):
                found.append(base)
            found += [f"{base}.{a.name}" for a in node.names if _is_testing(f"{base}.{a.name}")]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if (
                name in ("import_module", "__import__")
                and isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and _is_testing(arg.value)
            ):
                found.append(arg.value)
    return found


def _library_files() -> list[Path]:
    files = [ROOT / "train.py"]
    for top in LIBRARY:
        files += sorted((ROOT / top).rglob("*.py"))
    testing_dir = ROOT / "megatron_optiml" / "testing"
    return [f for f in files if testing_dir not in f.parents]


def test_library_code_does_not_import_the_testing_package():
    files = _library_files()
    assert len(files) > 80  # the walk found the package, not an empty folder
    bad = {}
    for path in files:
        hits = imports_of_testing(
            path.read_text(), _module_name(path), is_package=path.name == "__init__.py"
        )
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    assert not bad, f"library modules import {TESTING}: {bad}"


@pytest.mark.parametrize(
    "source",
    [
        "import megatron_optiml.testing.faults",
        "from megatron_optiml.testing import distributed",
        "from megatron_optiml import testing",
        "from ..testing.parity import parity_worker",
        "from .. import testing",
        "def f():\n    from megatron_optiml.testing.data import dp_order_worker",
        "importlib.import_module('megatron_optiml.testing.attention')",
    ],
)
def test_the_check_sees_every_form_of_import(source):
    assert imports_of_testing(source, "megatron_optiml.training.trainer")


@pytest.mark.parametrize(
    "source",
    [
        "import megatron_optiml.training",
        "from torch import testing",
        "from ..data import loading",
        "import numpy.testing",
        "'megatron_optiml.testing.distributed.run_distributed'  # a docstring mention",
    ],
)
def test_the_check_leaves_other_imports_alone(source):
    assert not imports_of_testing(source, "megatron_optiml.training.trainer")

"""The import rules of the developers' guide, read from the source: layers import one way, no private names cross
modules, and every library module logs under its own name.

Layers: recipes -> posttrain -> rewards; eval sits beside them and may import posttrain and rewards, but nothing
in posttrain or rewards imports eval (lazy imports inside functions included). The leaderboard server is an
application on top: it may import eval, posttrain and rewards, and none of them imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("posttrain", "rewards", "eval", "recipes", "benchmarks", "leaderboard")


def _files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) for every import in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [alias.name for alias in node.names], node.lineno))
    return out


@pytest.mark.parametrize(
    "layer, forbidden",
    [
        ("posttrain", ("eval", "leaderboard")),
        ("rewards", ("eval", "posttrain", "recipes", "leaderboard")),
        ("eval", ("leaderboard", "recipes")),
    ],
)
def test_layers_import_one_way(layer, forbidden):
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _files(layer)
        for module, _, line in _imports(path)
        if module.split(".")[0] in forbidden
    ]
    assert not wrong, "\n".join(wrong)


def test_no_private_names_cross_modules():
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}.{name}"
        for path in _files(*PACKAGES)
        for module, names, line in _imports(path)
        if module.split(".")[0] in PACKAGES
        for name in names
        if name.startswith("_")
    ]
    assert not wrong, "\n".join(wrong)


def test_library_modules_log_under_their_own_name():
    """`logging.getLogger(__name__)`: a logger per module, so a message says where it came from."""
    wrong = []
    for path in _files("posttrain", "recipes"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "getLogger"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "logging"
                and node.args
                and not (isinstance(node.args[0], ast.Name) and node.args[0].id == "__name__")
                and not _in_setup_logging(path, node)
            ):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not wrong, "\n".join(wrong)


def _in_setup_logging(path: Path, call: ast.Call) -> bool:
    """`posttrain.runtime.setup_logging` sets the levels of named loggers; it creates none of its own."""
    tree = ast.parse(path.read_text())
    return any(
        isinstance(fn, ast.FunctionDef)
        and fn.name == "setup_logging"
        and fn.lineno <= call.lineno <= fn.end_lineno
        for fn in ast.walk(tree)
    )

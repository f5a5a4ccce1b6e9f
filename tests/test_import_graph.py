"""The import graph of the project packages, read with `ast`: layers import one way and nothing is circular.

Every import counts, wherever it stands (module top, inside a function, under ``if TYPE_CHECKING:``): a lazy or
type-only import is still a dependency a reader has to follow, and it is how circles used to hide.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("posttrain", "rewards", "eval", "leaderboard")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, own: str, modules: set[str], *, is_package: bool = False) -> set[str]:
    """Project modules that module ``own`` (text ``source``) imports; ``from pkg import name`` counts
    ``pkg.name`` when that is a module."""
    package = own if is_package else own.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` depends on a.b.c (and runs a, a.b): the longest project module named counts
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != own:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    modules = {module_name(p) for p in paths}
    return {
        module_name(p): imported_modules(
            p.read_text(), module_name(p), modules, is_package=p.name == "__init__.py"
        )
        for p in paths
    }


def find_cycle(graph: dict[str, set[str]], nodes: set[str]) -> list[str] | None:
    """One import circle among ``nodes`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ()) & nodes):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(nodes):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_violations(graph: dict[str, set[str]], source: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.split(".")[0] == source
        for target in targets
        if target.split(".")[0] in forbidden
    )


def test_graph_reader_sees_lazy_relative_and_type_checking_imports() -> None:
    """The reader and the circle finder themselves, on hand-made input."""
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rewards.config import X\n"
        "def f():\n    import rewards.judge\n    from rewards import format\n    from . import registry\n"
        "    import json, os.path\n"
    )
    modules = {"rewards", "rewards.config", "rewards.judge", "rewards.format", "rewards.registry"}
    assert imported_modules(source, "rewards.overlong", modules) == {
        "rewards",
        "rewards.config",
        "rewards.judge",
        "rewards.format",
        "rewards.registry",
    }
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph, set(graph)) == ["a", "b", "c", "a"]
    assert find_cycle(graph, {"a", "b", "d"}) is None  # only edges among the given nodes
    assert find_cycle({"a": {"b"}, "b": set()}, {"a", "b"}) is None


def test_rewards_has_no_import_cycle() -> None:
    graph = import_graph()
    rewards = {m for m in graph if m.split(".")[0] == "rewards"}
    assert len(rewards) >= 8
    assert find_cycle(graph, rewards) is None


def test_rewards_imports_only_itself() -> None:
    """rewards is the bottom layer: it never imports posttrain or eval (recipes -> posttrain -> rewards)."""
    assert layer_violations(import_graph(), "rewards", ("posttrain", "eval")) == []


def test_posttrain_does_not_import_eval() -> None:
    assert layer_violations(import_graph(), "posttrain", ("eval",)) == []


def test_project_has_no_import_cycle() -> None:
    graph = import_graph()
    assert find_cycle(graph, set(graph)) is None


@pytest.mark.parametrize(
    "module", ["config", "registry", "judge", "overlong", "reward_model", "countdown", "format"]
)
def test_each_rewards_module_imports_first(module: str) -> None:
    """`python -c "import rewards.<module>"` works whichever module a fresh interpreter imports first."""
    subprocess.run(
        [sys.executable, "-c", f"import rewards.{module}, rewards.registry as r; assert r.reward_names()"],
        cwd=ROOT,
        check=True,
        timeout=60,
    )

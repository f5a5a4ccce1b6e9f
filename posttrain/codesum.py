"""Code summarisation data that is real and offline: Python functions and their docstrings, read with `ast` from
the standard library installed on this machine.

Each example is a function's source with its docstring removed (the input) and the docstring's first sentence
(the target summary). Functions are deduplicated by their code, and the split is by module: a module's
functions are all in train or all in test (by a hash of the module's name), so no file leaks across the split.
Tests of the standard library itself, and files that do not parse, are skipped.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TEST_SHARE = 10  # one module in TEST_SHARE goes to the test split
SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}
MIN_LINES, MAX_LINES = 3, 40
MIN_SUMMARY_WORDS, MAX_SUMMARY_CHARS = 3, 200


@dataclass(frozen=True)
class CodeExample:
    code: str
    summary: str
    name: str
    module: str


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def is_test_module(module: str) -> bool:
    """The split of a module: fixed by its dotted name alone."""
    return hashlib.sha256(module.encode()).digest()[0] % TEST_SHARE == 0


def first_sentence(docstring: str) -> str | None:
    """The docstring's first sentence (or first line), on one line; None when too short or too long."""
    text = inspect.cleandoc(docstring).split("\n\n", 1)[0]
    text = " ".join(text.split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    sentence = match.group(1) if match else text
    if len(sentence.split()) < MIN_SUMMARY_WORDS or len(sentence) > MAX_SUMMARY_CHARS:
        return None
    return sentence


def _without_docstring(source_lines: list[str], node: ast.AST) -> str | None:
    """The function's source lines with the docstring statement cut out; None when nothing else is left."""
    doc = node.body[0]
    if len(node.body) < 2:
        return None
    start, end = node.lineno, node.end_lineno
    if getattr(node, "decorator_list", None):
        start = min(d.lineno for d in node.decorator_list)
    kept = [
        line for number, line in enumerate(source_lines[start - 1 : end], start=start)
        if not doc.lineno <= number <= doc.end_lineno
    ]  # fmt: skip
    indent = min((len(line) - len(line.lstrip()) for line in kept if line.strip()), default=0)
    return "\n".join(line[indent:] for line in kept).rstrip() + "\n"


def functions_in(source: str, module: str) -> Iterator[CodeExample]:
    """Every documented function or method of ``source`` as an example (none when it does not parse)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return
    lines = source.splitlines()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        docstring = ast.get_docstring(node, clean=False)
        if not docstring:
            continue
        summary = first_sentence(docstring)
        code = _without_docstring(lines, node) if summary else None
        if code is None or not MIN_LINES <= code.count("\n") <= MAX_LINES:
            continue
        yield CodeExample(code=code, summary=summary, name=node.name, module=module)


def module_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def stdlib_examples(root: Path | None = None) -> Iterator[CodeExample]:
    """Examples from every module under ``root`` (default: this Python's standard library), in path order."""
    root = root or stdlib_root()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_PARTS and not d.startswith("."))
        for filename in sorted(filenames):
            if not filename.endswith(".py") or filename.startswith("test_"):
                continue
            path = Path(dirpath) / filename
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            yield from functions_in(source, module_name(path, root))


def codesum_splits(
    *, max_train: int | None = None, max_test: int | None = None, root: Path | None = None
) -> tuple[list[CodeExample], list[CodeExample]]:
    """(train, test): deduplicated by code, split by module, each in path order and cut to its maximum."""
    seen: set[str] = set()
    train: list[CodeExample] = []
    test: list[CodeExample] = []
    for example in stdlib_examples(root):
        key = hashlib.sha256(" ".join(example.code.split()).encode()).hexdigest()
        if key in seen:
            continue
        seen.add(key)
        (test if is_test_module(example.module) else train).append(example)
    return train[:max_train] if max_train else train, test[:max_test] if max_test else test

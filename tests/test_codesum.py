"""Code summarisation data from the installed standard library (posttrain.codesum): extraction on hand-written
modules, the docstring never in the input, deduplication, and a split by module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from posttrain.codesum import codesum_splits, first_sentence, functions_in, is_test_module

SOURCE = '''
import functools


def documented(a, b):
    """Add two numbers and return the sum.

    Longer text that is not part of the summary.
    """
    total = a + b
    # a comment survives
    return total


def undocumented(x):
    y = x * 2
    z = y + 1
    return z


def only_a_docstring():
    """Does nothing at all, really."""


class Box:
    @functools.cache
    def size(self, scale):
        """Return the box's size times scale."""
        width = self.width
        height = self.height
        return width * height * scale

    async def fetch(self):
        """Fetch the contents of the box asynchronously."""
        data = await self.read()
        self.data = data
        return data


def short_doc(a):
    """Too short."""
    b = a
    c = b
    return c
'''


def test_functions_and_methods_with_docstrings_become_examples() -> None:
    examples = {e.name: e for e in functions_in(SOURCE, "pkg.mod")}
    assert set(examples) == {"documented", "size", "fetch"}
    doc = examples["documented"]
    assert doc.summary == "Add two numbers and return the sum."
    assert doc.code.startswith("def documented(a, b):\n") and "# a comment survives" in doc.code
    assert '"""' not in doc.code and "Longer text" not in doc.code
    size = examples["size"]
    assert size.code.startswith("@functools.cache\ndef size(self, scale):")  # dedented, decorator kept
    assert size.summary == "Return the box's size times scale."
    assert examples["fetch"].code.startswith("async def fetch(self):")
    for example in examples.values():
        ast.parse(example.code)  # still valid Python without its docstring
        assert example.module == "pkg.mod"


def test_unparsable_source_gives_nothing() -> None:
    assert list(functions_in("def broken(:\n    pass", "m")) == []
    assert list(functions_in("\x00", "m")) == []


@pytest.mark.parametrize(
    "docstring, expected",
    [
        ("Return the sum. More text.", "Return the sum."),
        ("\n    Return the sum of a\n    and b.\n\n    Details.\n", "Return the sum of a and b."),
        ("Short.", None),
        ("word " * 60, None),
        ("A summary without a full stop", "A summary without a full stop"),
    ],
)
def test_first_sentence(docstring: str, expected: str | None) -> None:
    assert first_sentence(docstring) == expected


def test_split_by_module_and_dedup(tmp_path: Path) -> None:
    body = '''def f{n}(a):
    """Compute something useful here."""
    b = a + {n}
    c = b * 2
    return c
'''
    for i in range(40):
        (tmp_path / f"mod{i}.py").write_text(body.format(n=i % 20))  # each function twice
    (tmp_path / "test_skipped.py").write_text(body.format(n=99))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "inner.py").write_text(body.format(n=98))
    train, test = codesum_splits(root=tmp_path)
    assert len(train) + len(test) == 20  # duplicates by code dropped; test files skipped
    assert {e.module for e in train}.isdisjoint({e.module for e in test})
    assert all(is_test_module(e.module) for e in test) and not any(is_test_module(e.module) for e in train)
    assert codesum_splits(root=tmp_path) == (train, test)
    short_train, short_test = codesum_splits(root=tmp_path, max_train=3, max_test=1)
    assert short_train == train[:3] and short_test == test[:1]


def test_the_installed_standard_library_gives_real_data() -> None:
    from posttrain.codesum import stdlib_root

    root = stdlib_root() / "email"  # one real package keeps the test quick; the whole library gives ~4,500
    train, test = codesum_splits(root=root)
    assert len(train) + len(test) >= 50
    assert {e.module for e in train}.isdisjoint({e.module for e in test})
    for example in train + test:
        assert example.summary not in example.code
        assert not example.module.startswith("test.")

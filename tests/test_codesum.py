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


def test_rows_keep_the_module_split_and_are_shuffled_reproducibly() -> None:
    from posttrain.codesum import MAX_CODE_CHARS, codesum_rows

    train = codesum_rows("codesum", "train", 300, seed=1)
    test = codesum_rows("codesum", "test", 100, seed=1)
    assert len(train) == 300 and len(test) == 100
    module = lambda row: row["name"].rsplit(".", 1)[0]  # noqa: E731
    assert {module(r) for r in train}.isdisjoint({module(r) for r in test})
    assert all(is_test_module(module(r)) for r in test) and not any(is_test_module(module(r)) for r in train)
    assert all(len(r["code"]) <= MAX_CODE_CHARS and r["summary"] not in r["code"] for r in train + test)
    assert len({module(r) for r in test}) >= 10  # shuffled: not the first modules in path order
    assert codesum_rows("codesum", "test", 100, seed=1) == test
    assert codesum_rows("codesum", "test", 100, seed=2) != test
    with pytest.raises(ValueError, match="split must be"):
        codesum_rows("codesum", "validation", 3)
    with pytest.raises(ValueError, match="at least one row"):
        codesum_rows("codesum", "train", 0)


def test_hub_code_loses_its_docstring() -> None:
    from posttrain.codesum import _strip_hub_docstring

    code = 'def add(a, b):\n    """Add a and b.\n\n    Returns the sum.\n    """\n    total = a + b\n    return total\n'
    assert _strip_hub_docstring(code) == "def add(a, b):\n    total = a + b\n    return total\n"
    assert _strip_hub_docstring("def f(x):\n    return x\n") == "def f(x):\n    return x\n"
    assert _strip_hub_docstring("def broken(:\n") is None
    assert _strip_hub_docstring("x = 1\ny = 2\n") is None


def test_hub_data_offline_says_what_to_use() -> None:
    from posttrain.codesum import codesum_rows

    with pytest.raises(FileNotFoundError, match="dataset_name: codesum"):
        codesum_rows("google/code_x_glue_ct_code_to_text", "test", 3)
    with pytest.raises(ValueError, match="unknown code summarisation source"):
        codesum_rows("someone/code", "test", 3)


def test_sft_and_rl_data_are_conversational_with_the_reference() -> None:
    from types import SimpleNamespace

    from posttrain.data import load_sft_dataset
    from posttrain.rl import build_rl_dataset, rl_task
    from rewards.code_summary import code_summary_reward

    script = SimpleNamespace(
        dataset_name="codesum", dataset_revision=None, dataset_max_train_rows=12, dataset_max_test_rows=5
    )
    seeds = SimpleNamespace(countdown_data_seed=7)
    data = load_sft_dataset(script, seeds)
    assert (len(data["train"]), len(data["test"])) == (12, 5)
    row = data["train"][0]
    assert row["prompt"][0]["role"] == "user" and "```python\n" in row["prompt"][0]["content"]
    assert row["completion"][0]["role"] == "assistant"
    assert rl_task("codesum") == "codesum"
    rl, info = build_rl_dataset(script, seeds)
    assert info["task"] == "codesum" and set(rl.column_names) == {"prompt", "reference"}
    # the reference is the SFT target: replying with it earns the full reward
    assert code_summary_reward(rl["reference"][:3], reference=rl["reference"][:3]) == [1.0, 1.0, 1.0]


@pytest.mark.timeout(600)
def test_tiny_sft_then_eval_and_compare(tiny_model_dir, tmp_path) -> None:
    """recipes/sft/codesum.yaml as shipped (padding-free batches) on a tiny model, then eval.codesum before and
    after and their paired comparison."""
    import json
    import sys

    from tests.conftest import run_command

    repo = Path(__file__).resolve().parent.parent
    out = tmp_path / "sft"
    cmd = [
        sys.executable, str(repo / "recipes/sft/run.py"), "--config", "recipes/sft/codesum.yaml",
        "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--dataset_max_train_rows", "12",
        "--dataset_max_test_rows", "4", "--per_device_train_batch_size", "4", "--max_steps", "2",
        "--save_steps", "1", "--report_to", "none", "--disable_tqdm", "true",
    ]  # fmt: skip
    run_command(cmd, timeout=500)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["n_train"] == 12 and summary["args"]["training"]["padding_free"] is True

    from eval.codesum import main as evaluate

    for name, model in (("before", tiny_model_dir), ("after", out)):
        evaluate(
            [
                "--model",
                str(model),
                "--n_examples",
                "4",
                "--max_new_tokens",
                "6",
                "--output_dir",
                str(tmp_path / name),
            ]
        )
    result = evaluate(
        ["compare", str(tmp_path / "before"), str(tmp_path / "after"), "--output_dir", str(tmp_path)]
    )
    assert result["n_tasks"] == 4 and set(result["rouge_l"]) == {"before", "after", "difference", "ci95"}
    assert (tmp_path / "results.md").read_text().count("| reference |") == 4

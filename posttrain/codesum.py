"""Code summarisation data that is real and offline: Python functions and their docstrings, read with `ast` from
the standard library installed on this machine.

Each example is a function's source with its docstring removed (the input) and the docstring's first sentence
(the target summary). Functions are deduplicated by their code, and the split is by module: a module's
functions are all in train or all in test (by a hash of the module's name), so no file leaks across the split.
Tests of the standard library itself, and files that do not parse, are skipped.

With the hub, `google/code_x_glue_ct_code_to_text` (config ``python``, pinned) gives CodeXGLUE's functions and
docstrings; its ``code`` keeps the docstring, so it is cut the same way. Rows are {code, summary} either way:
conversational prompt-completion records for decoder-only SFT, source/target pairs for encoder-decoders.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import random
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

GENERATED = "codesum"  # dataset_name of the standard-library data
CODESUM_HUB_ID = "google/code_x_glue_ct_code_to_text"
CODESUM_HUB_CONFIG = "python"
# The full commit seen on the hub's README page of the parquet (script-free) layout.
CODESUM_HUB_REVISION = "2364569bd0d3943889a1932a899a234ae1bf23c3"
INSTRUCTION = "Summarise what this Python function does in one sentence, in the style of a docstring."
MAX_CODE_CHARS = (
    1200  # longer functions are left out of the default sets (a 2-core CPU trains on them slowly)
)
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


@lru_cache(maxsize=1)
def _stdlib_splits() -> tuple[tuple[CodeExample, ...], tuple[CodeExample, ...]]:
    train, test = codesum_splits()  # ~2 s: read once per process
    return tuple(train), tuple(test)


def _strip_hub_docstring(code: str) -> str | None:
    """A CodeXGLUE function's code without its docstring (None when it does not parse as one function)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return None
    node = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    if ast.get_docstring(node, clean=False) is None:
        return code.rstrip() + "\n"
    return _without_docstring(code.splitlines(), node)


def codesum_rows(
    dataset_name: str | None,
    split: str,
    n: int,
    *,
    seed: int = 0,
    revision: str | None = None,
    max_code_chars: int | None = MAX_CODE_CHARS,
) -> list[dict[str, str]]:
    """``n`` rows {code, summary, name} of ``split`` ("train" or "test"): standard-library functions (shuffled
    with ``seed``, so a small set spans many modules), or CodeXGLUE's with the hub."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n < 1:
        raise ValueError(f"need at least one row, got n={n}")
    if dataset_name in (None, GENERATED):
        train, test = _stdlib_splits()
        pool = [
            e
            for e in (train if split == "train" else test)
            if not max_code_chars or len(e.code) <= max_code_chars
        ]
        random.Random(seed).shuffle(pool)
        return [{"code": e.code, "summary": e.summary, "name": f"{e.module}.{e.name}"} for e in pool[:n]]
    if dataset_name != CODESUM_HUB_ID:
        raise ValueError(
            f"unknown code summarisation source {dataset_name!r}; use {GENERATED!r} or {CODESUM_HUB_ID!r}"
        )
    from datasets import load_dataset

    try:
        data = load_dataset(
            CODESUM_HUB_ID, CODESUM_HUB_CONFIG, split=split, revision=revision or CODESUM_HUB_REVISION
        )
    except Exception as exc:  # noqa: BLE001 - offline, or the hub refused: say what to use instead
        raise FileNotFoundError(
            f"cannot load {CODESUM_HUB_ID} ({type(exc).__name__}: {str(exc)[:200]}); offline, use the standard "
            f"library's functions (dataset_name: {GENERATED})"
        ) from None
    rows = []
    for row in data:
        if len(rows) >= n:
            break
        code = _strip_hub_docstring(row["code"]) or " ".join(row["code_tokens"])
        summary = " ".join(row["docstring_tokens"]).strip()
        if summary and (not max_code_chars or len(code) <= max_code_chars):
            rows.append({"code": code, "summary": summary, "name": row["func_name"]})
    return rows


def codesum_prompt(code: str) -> list[dict[str, str]]:
    """The conversational prompt of a function (the SFT, RL and evaluation prompts are the same)."""
    return [{"role": "user", "content": f"{INSTRUCTION}\n\n```python\n{code}```"}]


def seq2seq_dataset(rows: list[dict], tokenizer, *, max_source_length: int, max_target_length: int):
    """Encoder-decoder features: input_ids / attention_mask from the code, labels from the summary (truncated;
    DataCollatorForSeq2Seq pads the labels with -100 and builds the decoder inputs from them)."""
    from datasets import Dataset

    def encode(batch: dict) -> dict:
        features = tokenizer(batch["code"], max_length=max_source_length, truncation=True)
        targets = tokenizer(text_target=batch["summary"], max_length=max_target_length, truncation=True)
        features["labels"] = targets["input_ids"]
        return features

    data = Dataset.from_list(rows)
    return data.map(encode, batched=True, remove_columns=data.column_names)

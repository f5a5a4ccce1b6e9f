"""Synthetic prompts for Re:Fine: a task description -> an LLM behind an OpenAI-compatible API -> a deduplicated
train/test split that `datasets` loads, with a card saying how it was made.

    python -m posttrain.synthetic --task recipes/refine/tasks/style_transfer.md --n 500 \
        --output_dir runs/refine-style_transfer/prompts --base_url http://127.0.0.1:8002/v1 --model embedded

Each request asks for ``inputs_per_request`` inputs as JSON (``{"inputs": [...]}``, a JSON-schema
``response_format`` where the endpoint has it), with its own seed and topic hint so that requests differ.
Requests go out in waves of ``--concurrency``; each has the judge's deadline and retry rules
(`rewards.api_retry`). Every answer is appended to a cache as it arrives, so a crash loses nothing and a re-run
with the same settings makes no request. Answers are read in request order, whatever order they arrived in, so
the same answers always give the same dataset. Inputs are stripped, filtered by length, and deduplicated exactly
(after normalising case, spacing and punctuation) and approximately (word-shingle Jaccard similarity), before
the split, so no input, nor a near copy of one, is in both splits.

A task whose inputs come from a dataset (``inputs:`` in the task file, e.g. TL;DR) is written to the same folder
layout from that dataset, without any request.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from posttrain.dataset_names import SYNTHETIC_CARD_FILE as CARD_FILE
from posttrain.io import atomic_write_json, atomic_write_text
from posttrain.refine_tasks import RefineTask, TaskFileError, load_task
from rewards.api_retry import (
    NO_KEY,
    CallFailed,
    EndpointRefused,
    RetryPolicy,
    answer_json,
    api_key_from_env,
    call_with_deadline,
    call_with_retries,
    openai_client,
    redact,
)

logger = logging.getLogger(__name__)

CACHE_FILE = "generator_cache.jsonl"
RESPONSE_FORMATS = ("json_schema", "json_object", "none")

SYSTEM_PROMPT = """You write training inputs for a language model. You will read a task description; write \
INPUTS that a user might give a model doing that task (not the model's answers).

The inputs must be realistic, self-contained and different from each other in topic, length and wording. Do \
not repeat the examples of the task description: write new ones.

Answer with JSON only, in this form: {"inputs": ["<input 1>", "<input 2>", ...]}"""


class GeneratorOutputError(ValueError):
    """An answer with no usable inputs (not JSON, no "inputs" list)."""


class GeneratorConfigError(RuntimeError):
    """The endpoint refuses the configuration (key, model or URL), or the settings cannot work."""


# ------------------------------------------------------------------------------------------------ parsing


@dataclass
class ParsedInputs:
    inputs: list[str]
    bad_items: int = 0


def parse_inputs(content: Any) -> ParsedInputs:
    """The strings of ``{"inputs": [...]}`` in an answer (```json fences and prose around it tolerated)."""
    data = answer_json(content, what="the answer", error=GeneratorOutputError)
    items = data.get("inputs") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise GeneratorOutputError('the answer has no "inputs" list')
    out = ParsedInputs(inputs=[])
    for item in items:
        if isinstance(item, dict):  # {"input": "..."} / {"text": "..."}: a common near miss
            item = item.get("input", item.get("text"))
        if isinstance(item, str):
            out.inputs.append(item)
        else:
            out.bad_items += 1
    if not out.inputs:
        raise GeneratorOutputError('the "inputs" list holds no string')
    return out


# ------------------------------------------------------------------------------------------------ dedup


def normalise(text: str) -> str:
    """Case, spacing and punctuation folded away: the key of exact duplicates."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def shingles(text: str, n: int = 3) -> frozenset[str]:
    words = normalise(text).split()
    if len(words) < n:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


class Deduplicator:
    """Keeps the first of every group of exact or near duplicates (Jaccard of word 3-grams >= ``threshold``).

    An inverted index over shingles limits the comparisons to texts that share at least one shingle."""

    def __init__(self, threshold: float = 0.7) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near_duplicate_threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.exact: set[str] = set()
        self.kept: list[frozenset[str]] = []
        self.index: dict[str, list[int]] = {}

    def add(self, text: str) -> str:
        """ "kept", "exact" or "near"."""
        key = normalise(text)
        if key in self.exact:
            return "exact"
        grams = shingles(text)
        shared: dict[int, int] = {}
        for gram in grams:
            for j in self.index.get(gram, ()):
                shared[j] = shared.get(j, 0) + 1
        for j, common in shared.items():
            union = len(grams) + len(self.kept[j]) - common
            if union and common / union >= self.threshold:
                return "near"
        self.exact.add(key)
        self.kept.append(grams)
        for gram in grams:
            self.index.setdefault(gram, []).append(len(self.kept) - 1)
        return "kept"


# ------------------------------------------------------------------------------------------------ requests


@dataclass(frozen=True)
class GeneratorSettings:
    base_url: str
    model: str
    api_key_env: str = "GENERATOR_API_KEY"
    timeout_s: float = 120.0
    max_retries: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    concurrency: int = 4
    response_format: str = "json_schema"
    schema_string_limits: bool = False


def request_messages(task: RefineTask, index: int, seed: int) -> list[dict[str, str]]:
    """The chat messages of request ``index``: the task, how many inputs, and this request's topic hint."""
    k = task.generator.inputs_per_request
    hints = task.generator.hints
    hint = f"\nTopic for this batch: {hints[(index + seed) % len(hints)]}." if hints else ""
    user = (
        f"Task description:\n{task.description or task.summary}\n\n"
        f"Write {k} different inputs for this task, each between {task.generator.min_chars} and "
        f"{task.generator.max_chars} characters.{hint}\nBatch {index + 1}."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def response_format(kind: str, k: int, string_limits: tuple[int, int] | None = None) -> dict[str, Any] | None:
    """The ``response_format`` of a request; ``string_limits`` (min, max characters) bounds each input in the
    schema, which grammar-constrained local servers (llama.cpp, vLLM) enforce and OpenAI's strict mode refuses."""
    if kind == "none":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    item: dict[str, Any] = {"type": "string"}
    if string_limits is not None:
        item.update(minLength=string_limits[0], maxLength=string_limits[1])
    schema = {
        "type": "object",
        "properties": {"inputs": {"type": "array", "items": item, "minItems": 1, "maxItems": k}},
        "required": ["inputs"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "inputs", "strict": True, "schema": schema}}


def request_body(task: RefineTask, settings: GeneratorSettings, index: int, seed: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": settings.model,
        "messages": request_messages(task, index, seed),
        "temperature": task.generator.temperature,
        "max_tokens": task.generator.max_tokens,
        "seed": seed * 1_000_003 + index,
    }
    limits = (task.generator.min_chars, task.generator.max_chars) if settings.schema_string_limits else None
    fmt = response_format(settings.response_format, task.generator.inputs_per_request, limits)
    if fmt is not None:
        body["response_format"] = fmt
    return body


def cache_key(body: dict[str, Any]) -> str:
    """What makes an answer reusable: everything sent except the endpoint's address."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class AnswerCache:
    """Append-only JSONL of answers by request key; each line is flushed and synced as it is written."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.answers: dict[str, str] = {}
        self._lock = threading.Lock()
        if self.path.is_file():
            with self.path.open(encoding="utf-8") as handle:
                for line in handle:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a crash: that request is simply made again
                    if (
                        isinstance(row, dict)
                        and isinstance(row.get("key"), str)
                        and isinstance(row.get("content"), str)
                    ):
                        self.answers[row["key"]] = row["content"]

    def get(self, key: str) -> str | None:
        return self.answers.get(key)

    def put(self, key: str, index: int, content: str) -> None:
        line = json.dumps({"key": key, "request_index": index, "content": content}) + "\n"
        with self._lock:
            self.answers[key] = content
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())


@dataclass
class Counts:
    requests_sent: int = 0
    requests_cached: int = 0
    requests_failed: int = 0
    retries: int = 0
    unusable_answers: int = 0
    inputs_returned: int = 0
    bad_items: int = 0
    empty: int = 0
    too_short: int = 0
    too_long: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    kept: int = 0  # unique inputs found; those beyond --n are dropped (beyond_n)
    beyond_n: int = 0
    failures: list[str] = field(default_factory=list)


class Generator:
    def __init__(self, task: RefineTask, settings: GeneratorSettings, cache: AnswerCache, seed: int) -> None:
        self.task, self.settings, self.cache, self.seed = task, settings, cache, seed
        self.counts = Counts()
        self._lock = threading.Lock()

    def _api_key(self) -> str:
        return api_key_from_env(self.settings.api_key_env)

    def _call(self, body: dict[str, Any], attempt: list[int]) -> str:
        # A retry after an unusable answer with the same seed would get the same answer: each attempt its own.
        body = {**body, "seed": body["seed"] + 7919 * attempt[0]} if attempt[0] else body
        attempt[0] += 1
        client = openai_client(self.settings.base_url, self._api_key(), self.settings.timeout_s)
        response = call_with_deadline(
            lambda: client.chat.completions.create(**body),
            self.settings.timeout_s,
            close=client.close,
            name="generator-request",
        )
        choices = getattr(response, "choices", None) or []
        content = choices[0].message.content if choices else None
        parse_inputs(content)  # an unusable answer is retried, never cached
        return content

    def answer(self, index: int) -> str | None:
        """The answer to request ``index`` (cached, or fetched and cached); None when it failed for good."""
        body = request_body(self.task, self.settings, index, self.seed)
        key = cache_key(body)
        cached = self.cache.get(key)
        if cached is not None:
            with self._lock:
                self.counts.requests_cached += 1
            return cached
        key_value = self._api_key()
        policy = RetryPolicy(
            self.settings.max_retries,
            self.settings.backoff_s,
            self.settings.backoff_max_s,
            max_unusable_retries=1,
        )
        attempt = [0]

        def count_failure(failure: CallFailed) -> None:
            with self._lock:
                self.counts.unusable_answers += failure.kind == "unparseable"

        with self._lock:
            self.counts.requests_sent += 1
        try:
            content, attempts = call_with_retries(
                lambda: self._call(body, attempt),
                policy,
                secret=None if key_value == NO_KEY else key_value,
                unusable=(GeneratorOutputError,),
                on_failure=count_failure,
                what="generator request",
            )
        except EndpointRefused as failure:
            raise GeneratorConfigError(
                f"{self.settings.base_url} refused the request ({failure.message}); check --base_url, --model and "
                f"the key in ${self.settings.api_key_env}"
            ) from None
        except CallFailed as failure:
            with self._lock:
                self.counts.requests_failed += 1
                self.counts.retries += failure.attempts - 1
                self.counts.failures.append(f"request {index}: {failure.message}")
            logger.warning(
                "generator request %d failed after %d attempt(s): %s",
                index,
                failure.attempts,
                failure.message,
            )
            return None
        with self._lock:
            self.counts.retries += attempts - 1
        self.cache.put(key, index, content)
        return content


def clean_inputs(
    answers: Iterable[str | None], task: RefineTask, dedup: Deduplicator, counts: Counts
) -> list[str]:
    """The new inputs of ``answers`` (in order) that pass the filters and are no duplicate of an earlier one."""
    kept = []
    for content in answers:
        if content is None:
            continue
        try:
            parsed = parse_inputs(content)
        except GeneratorOutputError:
            counts.unusable_answers += 1
            continue
        counts.bad_items += parsed.bad_items
        counts.inputs_returned += len(parsed.inputs)
        for raw in parsed.inputs:
            text = raw.strip()
            if not text:
                counts.empty += 1
            elif len(text) < task.generator.min_chars:
                counts.too_short += 1
            elif len(text) > task.generator.max_chars:
                counts.too_long += 1
            else:
                verdict = dedup.add(text)
                if verdict == "kept":
                    kept.append(text)
                elif verdict == "exact":
                    counts.exact_duplicates += 1
                else:
                    counts.near_duplicates += 1
    counts.kept += len(kept)
    return kept


def generate_inputs(
    task: RefineTask,
    settings: GeneratorSettings,
    *,
    n: int,
    seed: int,
    cache_path: str | os.PathLike,
    max_requests: int | None = None,
    near_duplicate_threshold: float = 0.7,
    progress: bool = True,
) -> tuple[list[str], Counts]:
    """Up to ``n`` unique inputs in request order, and the counts of what happened on the way."""
    per_request = task.generator.inputs_per_request
    max_requests = max_requests or max(4, 4 * -(-n // per_request))
    generator = Generator(task, settings, AnswerCache(cache_path), seed)
    dedup = Deduplicator(near_duplicate_threshold)
    inputs: list[str] = []
    next_index = 0
    bar = tqdm(total=n, desc="synthetic inputs", unit="input", disable=not progress)
    with ThreadPoolExecutor(max_workers=settings.concurrency) as pool:
        while len(inputs) < n and next_index < max_requests:
            still_needed = -(-(n - len(inputs)) // per_request)
            wave = list(
                range(next_index, min(max_requests, next_index + max(still_needed, settings.concurrency)))
            )
            next_index = wave[-1] + 1
            answers = list(pool.map(generator.answer, wave))  # in request order, whatever finished first
            new = clean_inputs(answers, task, dedup, generator.counts)
            inputs.extend(new)
            bar.update(min(len(new), n - bar.n))
    bar.close()
    counts = generator.counts
    if len(inputs) < n:
        logger.warning(
            "only %d unique inputs of %d wanted after %d requests (failed %d, duplicates %d exact + %d near); "
            "raise --max_requests or check the generator's answers",
            len(inputs),
            n,
            next_index,
            counts.requests_failed,
            counts.exact_duplicates,
            counts.near_duplicates,
        )
    counts.beyond_n = max(0, len(inputs) - n)
    return inputs[:n], counts


# ------------------------------------------------------------------------------------------------ output


def split_inputs(inputs: Sequence[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, test), shuffled with ``seed``; at least one of each for two or more inputs."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    order = list(inputs)
    random.Random(seed).shuffle(order)
    n_test = min(len(order) - 1, max(1, round(len(order) * test_fraction))) if len(order) >= 2 else 0
    return order[n_test:], order[:n_test]


def rows(task: RefineTask, inputs: Sequence[str], split: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{task.name}-{split}-{i:05d}",
            "source": text,
            "prompt": [{"role": "user", "content": task.render_prompt(text)}],
        }
        for i, text in enumerate(inputs)
    ]


def write_dataset(
    output_dir: str | os.PathLike,
    task: RefineTask,
    train: Sequence[str],
    test: Sequence[str],
    card: dict[str, Any],
) -> Path:
    """``output_dir`` as a `datasets.DatasetDict` folder (train, test) plus CARD_FILE and README.md, replaced
    whole (written beside it, then renamed), so a crash never leaves half a dataset."""
    from datasets import Dataset, DatasetDict

    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        data = DatasetDict(
            {
                "train": Dataset.from_list(rows(task, train, "train")),
                "test": Dataset.from_list(rows(task, test, "test")),
            }
        )
        data.save_to_disk(str(staging))
        atomic_write_json(staging / CARD_FILE, card)
        atomic_write_text(staging / "README.md", card_markdown(card))
        cache = output_dir / CACHE_FILE
        if cache.is_file():  # the cache lives in the folder too: carry it over
            shutil.copy2(cache, staging / CACHE_FILE)
        old = output_dir.with_name(f".{output_dir.name}.old")
        if output_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(output_dir, old)
        os.replace(staging, output_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def card_markdown(card: dict[str, Any]) -> str:
    counts = card.get("counts", {})
    lines = [
        f"# Synthetic prompts: {card['task']['name']}",
        "",
        card["task"].get("summary", ""),
        "",
        f"- Source: {card['source']}",
        f"- Generator: {card.get('generator', {}).get('model', '-')} (seed {card.get('seed')})",
        f"- Splits: train {card['n_train']}, test {card['n_test']} (no input in both; deduplication: "
        f"{card.get('dedup', '-')})",
        "",
        "| count | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in counts.items() if not isinstance(value, list)),
        "",
        "Load: `datasets.load_from_disk(<this folder>)`.",
        "",
    ]
    return "\n".join(lines)


def card(
    task: RefineTask,
    *,
    source: str,
    seed: int,
    n_requested: int,
    train: Sequence[str],
    test: Sequence[str],
    **extra: Any,
) -> dict[str, Any]:
    task_file = Path(task.path)
    return {
        "task": {
            "name": task.name,
            "summary": task.summary,
            "path": task.path,
            "sha256": hashlib.sha256(task_file.read_bytes()).hexdigest() if task_file.is_file() else None,
        },
        "source": source,
        "seed": seed,
        "n_requested": n_requested,
        "n_train": len(train),
        "n_test": len(test),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }


def is_synthetic_folder(path: str | os.PathLike | None) -> bool:
    return bool(path) and (Path(path) / CARD_FILE).is_file()


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """The card of a prompt folder ({} when unreadable)."""
    try:
        card_data = json.loads((Path(path) / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return card_data if isinstance(card_data, dict) else {}


def load_prompts(path: str | os.PathLike, split: str) -> Any:
    """One split of a folder this module wrote, as a `datasets.Dataset` (prompt, source, id)."""
    from datasets import load_from_disk

    if not is_synthetic_folder(path):
        raise FileNotFoundError(
            f"{path} is not a prompt folder (no {CARD_FILE}); write one with `python -m posttrain.synthetic`"
        )
    data = load_from_disk(str(path))
    if split not in data:
        raise ValueError(f"{path} has no {split!r} split (it has {sorted(data)})")
    return data[split]


def inputs_from_dataset(
    task: RefineTask, seed: int
) -> tuple[list[str], list[str], str, Counts, dict[str, Any]]:
    """A task with ``inputs:`` (TL;DR): the dataset's own train/test posts, exact duplicates removed (posts of
    one template family share most of their words, so near-duplicate removal would empty the fixture)."""
    from posttrain.tldr import load_tldr_inputs

    train, test, source = load_tldr_inputs(
        task.inputs.dataset, max_train=task.inputs.max_train, max_test=task.inputs.max_test, seed=seed
    )
    dedup, counts = Deduplicator(1.0), Counts()
    train = clean_inputs([json.dumps({"inputs": train})], task, dedup, counts)
    test = clean_inputs([json.dumps({"inputs": test})], task, dedup, counts)
    return train, test, source, counts, {"dedup": "exact"}


def inputs_from_generator(
    task: RefineTask, args: argparse.Namespace
) -> tuple[list[str], list[str], str, Counts, dict[str, Any]]:
    if not args.base_url or not args.model:
        raise GeneratorConfigError(
            "the generator needs --base_url and --model (an OpenAI-compatible endpoint: `make serve-chat` "
            "starts one on the embedded model at http://127.0.0.1:8002/v1)"
        )
    settings = GeneratorSettings(
        base_url=args.base_url,
        model=args.model,
        api_key_env=args.api_key_env,
        timeout_s=args.timeout_s,
        max_retries=args.max_retries,
        backoff_s=args.backoff_s,
        concurrency=args.concurrency,
        response_format=args.response_format,
        schema_string_limits=args.schema_string_limits,
    )
    output_dir = Path(args.output_dir)
    cache_path = output_dir / CACHE_FILE
    leftover = output_dir.with_name(f".{output_dir.name}.old") / CACHE_FILE
    if not cache_path.is_file() and leftover.is_file():  # a crash between write_dataset's two renames
        output_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(leftover, cache_path)
    inputs, counts = generate_inputs(
        task,
        settings,
        n=args.n,
        seed=args.seed,
        cache_path=cache_path,
        max_requests=args.max_requests,
        near_duplicate_threshold=args.near_duplicate_threshold,
        progress=not args.quiet,
    )
    if len(inputs) < 2:
        raise GeneratorConfigError(
            f"only {len(inputs)} usable input(s) came back ({counts.requests_failed} requests failed, "
            f"{counts.unusable_answers} unusable answers); nothing to split. Failures: {counts.failures[:3]}"
        )
    train, test = split_inputs(inputs, args.test_fraction, args.seed)
    generator = {
        "base_url": redact(settings.base_url, os.environ.get(settings.api_key_env)),
        "model": settings.model,
        "response_format": settings.response_format,
        "schema_string_limits": settings.schema_string_limits,
        "temperature": task.generator.temperature,
        "inputs_per_request": task.generator.inputs_per_request,
        "max_tokens": task.generator.max_tokens,
        "concurrency": settings.concurrency,
        "min_chars": task.generator.min_chars,
        "max_chars": task.generator.max_chars,
    }
    extra = {
        "generator": generator,
        "dedup": f"exact + near (word 3-gram Jaccard >= {args.near_duplicate_threshold})",
        "failures": counts.failures[:20],
    }
    return train, test, "synthetic", counts, extra


def build(args: argparse.Namespace) -> Path:
    task = load_task(args.task)
    if args.inputs_dataset:
        if task.inputs is None:
            raise GeneratorConfigError(
                f"--inputs_dataset: {task.path} takes its inputs from the generator, not from a dataset"
            )
        task = task.model_copy(
            update={"inputs": task.inputs.model_copy(update={"dataset": args.inputs_dataset})}
        )
    if task.inputs is not None:
        train, test, source, counts, extra = inputs_from_dataset(task, args.seed)
    else:
        train, test, source, counts, extra = inputs_from_generator(task, args)
    n_requested = len(train) + len(test) if task.inputs is not None else args.n
    count_info = {k: v for k, v in vars(counts).items() if k != "failures"}
    info = card(
        task,
        source=source,
        seed=args.seed,
        n_requested=n_requested,
        train=train,
        test=test,
        counts=count_info,
        **extra,
    )
    written = write_dataset(args.output_dir, task, train, test, info)
    print(
        f"{written}: train {len(train)}, test {len(test)} | requests sent {counts.requests_sent}, cached "
        f"{counts.requests_cached}, failed {counts.requests_failed} | returned {counts.inputs_returned}, duplicates "
        f"{counts.exact_duplicates} exact + {counts.near_duplicates} near, filtered "
        f"{counts.empty + counts.too_short + counts.too_long}"
    )
    return written


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--task", required=True, help="task file, e.g. recipes/refine/tasks/style_transfer.md"
    )
    parser.add_argument("--n", type=int, default=500, help="unique inputs wanted (train + test)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--base_url", default=os.environ.get("GENERATOR_BASE_URL"))
    parser.add_argument("--model", default=os.environ.get("GENERATOR_MODEL"))
    parser.add_argument(
        "--api_key_env", default="GENERATOR_API_KEY", help="NAME of the variable holding the key"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test_fraction", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout_s", type=float, default=120.0, help="total deadline per request")
    parser.add_argument("--max_retries", type=int, default=3)
    parser.add_argument("--backoff_s", type=float, default=1.0)
    parser.add_argument("--max_requests", type=int, default=None, help="default: 4x the requests n needs")
    parser.add_argument("--near_duplicate_threshold", type=float, default=0.7)
    parser.add_argument("--response_format", choices=RESPONSE_FORMATS, default="json_schema")
    parser.add_argument(
        "--schema_string_limits",
        action="store_true",
        help="bound each input's length in the JSON schema (min_chars/max_chars): llama.cpp and vLLM enforce it "
        "while decoding, so a small model cannot ramble to max_tokens; OpenAI's strict mode refuses it",
    )
    parser.add_argument(
        "--inputs_dataset",
        choices=("trl-lib/tldr", "tldr_fixture"),
        help="for a task with `inputs:` (TL;DR): another source, e.g. tldr_fixture offline",
    )
    parser.add_argument("--quiet", action="store_true")
    return parser


def check_args(args: argparse.Namespace) -> None:
    from rewards.config import check_env_name

    problems = []
    if args.n < 2:
        problems.append(f"--n must be >= 2 (a train and a test input), got {args.n}")
    if args.concurrency < 1:
        problems.append(f"--concurrency must be >= 1, got {args.concurrency}")
    if not args.timeout_s > 0:
        problems.append(f"--timeout_s must be > 0, got {args.timeout_s}")
    if args.max_retries < 0:
        problems.append(f"--max_retries must be >= 0, got {args.max_retries}")
    if args.max_requests is not None and args.max_requests < 1:
        problems.append(f"--max_requests must be >= 1, got {args.max_requests}")
    if not 0.0 < args.test_fraction < 1.0:
        problems.append(f"--test_fraction must be between 0 and 1, got {args.test_fraction}")
    if not 0.0 < args.near_duplicate_threshold <= 1.0:
        problems.append(f"--near_duplicate_threshold must be in (0, 1], got {args.near_duplicate_threshold}")
    if args.base_url and not str(args.base_url).startswith(("http://", "https://")):
        problems.append(f"--base_url must start with http:// or https://, got {args.base_url!r}")
    try:
        check_env_name(args.api_key_env, "--api_key_env")
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


def main(argv: Sequence[str] | None = None) -> Path:
    args = make_parser().parse_args(argv)
    check_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        written = build(args)
    except (TaskFileError, GeneratorConfigError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    return written


if __name__ == "__main__":
    main()

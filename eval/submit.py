"""Leaderboard submission: build, validate, save and upload a model's answers for both tasks.

    python -m eval.submit --model runs/grpo-countdown/model --method grpo
    LEADERBOARD_URL=https://... LEADERBOARD_TOKEN=... make leaderboard-submit MODEL=... METHOD=dpo
    python -m eval.submit --upload submissions/<file>.json      # validate and (re)send a saved file

Prompt sets (each a file path or a hub dataset id):
- Countdown (``--countdown_prompts``): JSONL rows ``{"target": int, "nums": [int, ...]}`` (an ``id`` is kept
  when present) or a hub dataset with ``target`` and ``nums`` columns; default: generated held-out tasks
  (``--countdown_n``, ``--countdown_seed``), never trained on.
- UltraFeedback (``--ultrafeedback_prompts``): ``.jsonl``/``.json`` with a ``prompt`` field, ``.txt`` one per
  line, ``fixture`` or a hub dataset with a ``prompt`` column; default: ``HuggingFaceH4/ultrafeedback_binarized``
  test prompts, the project's fixture when the hub is unreachable.

``--board_prompts`` (make: whenever ``LEADERBOARD_URL`` is set): both sets are downloaded from the board,
``<url>/prompts/<task>.jsonl`` as the self-hosted leaderboard (`leaderboard.app`) serves them; a task the board
serves no file for (404) is left out.

How many: every item of a given prompt file or dataset (the leaderboard's sets are sent whole); only for the
default sets (generated Countdown tasks, the default/fixture UltraFeedback prompts) the first 32 (a CPU-sized
run). ``--countdown_n`` / ``--ultrafeedback_n`` take the first N in either case.

Best-of-N (``--best_of N``, ``--best_of_temperature``): the model samples N answers per prompt and one is
submitted (`eval.best_of_n`; ties: the first). Countdown: the first the rule verifier accepts
(`rewards.countdown.score` == 1.0, from the puzzle's numbers and target only), else the first sample.
UltraFeedback: the judge's highest-scored, through ``--reward_url`` or the local reward server started in this
process (``--serve_judge verifiable`` / ``--serve_rm FOLDER``, `eval.winrate.connect_judge`); a prompt none of
whose candidates could be scored keeps its first sample and is counted. ``metadata.best_of`` records N, the
temperature, the verifier, the judge (no credentials) and those counts; ``metadata.sampling`` keeps ``n: 1``
(one submitted answer per prompt) and the run's own settings.

The file follows schema version 1: the pydantic models `Submission` and below are the schema (no other keys at
any level; every bad field is reported with its path). It goes to ``submissions/<model>-<method>-<UTC time>.json``.
Upload: ``POST`` to ``LEADERBOARD_URL`` with ``Authorization: Bearer $LEADERBOARD_TOKEN`` and an
``Idempotency-Key`` (the file's sha256, so a resend cannot count twice), within ``--timeout_s`` in total. The
token is never printed or saved (also when the server echoes it), refused over plain http except to localhost,
and a redirect is refused rather than followed (it would resend the token elsewhere). Every refusal says what
happened and what to do; the file stays on disk either way.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import math
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urljoin, urlsplit

import pydantic_core
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from eval import best_of_n
from eval.reward_client import RewardEndpointError, redact_url
from posttrain.cli import run_cli
from posttrain.io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from eval.winrate import JudgeConnection

logger = logging.getLogger("eval.submit")

SCHEMA_VERSION = 1
TASKS = ("countdown", "ultrafeedback")
MAX_SUBMISSION_BYTES = 50 * 1024 * 1024
MAX_ANSWER_BYTES = 1024 * 1024  # of the leaderboard's answer kept for the receipt
DEFAULT_SET_N = 32  # items taken from the default (generated / fixture) prompt sets when no N is given
REWARD_TOKEN_MARGIN = 64  # tokens kept free for chat markup under the judge's limit (eval.winrate's default)
NEEDS_JUDGE = (
    "--best_of N > 1 on ultrafeedback needs a judge to pick with: --serve_judge verifiable (offline, the fixture's "
    "prompts), --serve_rm FOLDER (a reward model), or --reward_url URL [--reward_model ID --api_key_env VAR]; "
    "or leave ultrafeedback out (--tasks countdown)"
)


class SubmissionError(ValueError):
    """The submission breaks the schema; ``problems`` lists every bad field with its path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"invalid submission ({len(problems)} problem(s)):\n  {shown}{more}")


class UploadError(RuntimeError):
    """The leaderboard refused the submission or could not be reached."""


class NoBoardPrompts(UploadError):
    """The leaderboard serves no prompt file for this task (it does not score it)."""


# ----------------------------------------------------------------------------------------------------------
# Schema (the pydantic models are the schema; `validate_submission` turns their errors into field paths)
# ----------------------------------------------------------------------------------------------------------

MAX_INT = 2**63 - 1  # no field needs more; bigger numbers are refused rather than uploaded


def _utf8(text: str) -> str:
    # A lone surrogate ("\\ud800" in JSON) is a Python str but not UTF-8: it cannot be uploaded.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"holds a lone surrogate at character {exc.start}; it is not valid UTF-8"
            ) from None
    return text


def _non_blank(text: str) -> str:
    if not text.strip():
        raise ValueError(f"must be a non-empty string, got {text!r:.80}")
    return text


Text = Annotated[str, AfterValidator(_utf8)]
NonEmpty = Annotated[str, AfterValidator(_utf8), AfterValidator(_non_blank)]
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
Positive = Annotated[int, Field(ge=1, le=MAX_INT)]


class _Strict(BaseModel):
    # strict: "5" is not 5 and true is not 1; no NaN/Infinity in any number; unknown keys are errors.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Sampling(_Strict):
    max_new_tokens: Positive  # the largest of the tasks'; each task section holds its own
    temperature: Annotated[float, Field(ge=0)]
    top_p: Annotated[float, Field(gt=0, le=1)]
    top_k: Count
    n: Literal[1]  # one answer per prompt
    seed: Count
    batch_size: Positive | None


class BestOf(_Strict):
    """How each task's one answer was chosen among ``n`` sampled candidates (absent: plain sampling).

    ``temperature`` is the candidates' (``metadata.sampling`` keeps the run's own settings). Countdown: the
    first candidate ``rewards.countdown.score`` rates 1.0 (``countdown_verifier: "rule"``; how many tasks had
    one in ``countdown_verified``). UltraFeedback: the judge's best (``ultrafeedback_judge``: who, without
    credentials); ``ultrafeedback_unscored`` prompts had no candidate scored and keep their first sample.
    """

    n: Annotated[int, Field(ge=2, le=MAX_INT)]
    temperature: Annotated[float, Field(gt=0)]
    countdown_verifier: Literal["rule"] | None = None
    countdown_verified: Count | None = None
    ultrafeedback_judge: NonEmpty | None = None
    ultrafeedback_unscored: Count | None = None


class Metadata(_Strict):
    model: NonEmpty
    model_revision: Text | None  # the resolved hub commit when none was asked for
    method: NonEmpty
    git_commit: Text | None
    created: Text  # ISO-8601
    seed: Count
    sampling: Sampling
    backend: Literal["hf", "vllm"]
    team: Text | None = None
    best_of: BestOf | None = None  # optional: files without it (one sample per prompt) stay valid

    @field_validator("created")
    @classmethod
    def _iso(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"must be an ISO-8601 timestamp string, got {value!r:.80}") from None
        return value


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):  # bool included
        return abs(value) <= MAX_INT
    return value is None or isinstance(value, str) and (value.isascii() or value == _safe(value))


def _flat(source: dict[str, Any]) -> dict[str, Any]:
    for key, value in source.items():
        if not (_scalar(value) or isinstance(value, list) and all(_scalar(v) for v in value)):
            raise ValueError(
                f"{key!r} must be a string, a finite number, a bool, null or a list of those, got {_shown(value)}"
            )
    return source


# Where the prompts came from (file + sha256, dataset + split, generation seed): flat, so no deep nesting.
PromptSource = Annotated[dict[Text, Any], AfterValidator(_flat)]


class CountdownItem(_Strict):
    id: NonEmpty
    target: Count
    nums: Annotated[list[Count], Field(min_length=2)]
    prompt: Text
    completion: Text  # model output: any string, empty included


class UltraFeedbackItem(_Strict):
    prompt: NonEmpty
    response: Text
    id: NonEmpty  # the sha256 hex of the prompt's UTF-8 (declared last so the check sees the prompt)

    @field_validator("id")
    @classmethod
    def _is_prompt_hash(cls, value: str, info: ValidationInfo) -> str:
        prompt = info.data.get("prompt")
        expected = None if prompt is None else hashlib.sha256(prompt.encode()).hexdigest()
        if expected is not None and value != expected:
            raise ValueError(f"must be the sha256 of the prompt ({expected}), got {value[:80]!r}")
        return value


def _unique_ids(items: list[Any]) -> list[Any]:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.id in seen:
            raise ValueError(f"duplicate id {item.id!r} at index {i} (also at index {seen[item.id]})")
        seen[item.id] = i
    return items


class CountdownSection(_Strict):
    prompt_source: PromptSource
    template: NonEmpty
    max_new_tokens: Positive | None = None  # optional; written by this tool
    items: Annotated[list[CountdownItem], Field(min_length=1), AfterValidator(_unique_ids)]


class UltraFeedbackSection(_Strict):
    prompt_source: PromptSource
    max_new_tokens: Positive | None = None
    items: Annotated[list[UltraFeedbackItem], Field(min_length=1), AfterValidator(_unique_ids)]


class Submission(_Strict):
    """Schema version 1. At least one task; no other keys at any level (a typo is an error)."""

    schema_version: Literal[1]
    metadata: Metadata
    countdown: CountdownSection | None = None
    ultrafeedback: UltraFeedbackSection | None = None

    @model_validator(mode="after")
    def _some_task(self) -> Submission:
        if self.countdown is None and self.ultrafeedback is None:
            raise ValueError(f"holds no task: add at least one of {list(TASKS)}")
        best_of = self.metadata.best_of
        if best_of is not None:
            if self.countdown is not None and best_of.countdown_verifier is None:
                raise ValueError("metadata.best_of: a countdown section needs countdown_verifier")
            if self.ultrafeedback is not None and best_of.ultrafeedback_judge is None:
                raise ValueError("metadata.best_of: an ultrafeedback section needs ultrafeedback_judge")
        return self


class _BigInt:
    """What a JSON integer too long for Python's int() parses to: the schema refuses it with its path."""

    def __init__(self, digits: str):
        self.digits = digits

    def __repr__(self) -> str:
        return f"<a {len(self.digits)}-digit integer>"


def _parse_int(text: str) -> int | _BigInt:
    return int(text) if len(text) <= 40 else _BigInt(text)


def _safe(text: str) -> str:
    """``text`` printable and writable as UTF-8 (a lone surrogate becomes its escape)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _shown(value: Any) -> str:
    try:
        return _safe(f"{value!r:.80}")
    except ValueError:  # an int too long for repr()
        return f"<a {value.bit_length() * 30103 // 100000}-digit integer>"


def _problem(error: Any) -> str:
    path = "submission" if len(error["loc"]) <= 1 else ""
    for part in error["loc"]:
        part = part if isinstance(part, int) else _safe(str(part))
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    kind, message = error["type"], error["msg"].removeprefix("Value error, ")
    if kind == "missing":
        return f"{path}: is missing"
    if kind == "extra_forbidden":
        return f"{path}: unknown field (not in schema version {SCHEMA_VERSION})"
    if kind == "value_error":
        return f"{path}: {_safe(message)}"
    return f"{path}: {message}, got {_shown(error.get('input'))}"


def validate_submission(data: Any) -> Submission:
    """The parsed submission; raises `SubmissionError` listing every problem (field path + what is wrong)."""
    try:
        return Submission.model_validate(data)
    except ValidationError as exc:
        raise SubmissionError([_problem(e) for e in exc.errors(include_url=False)]) from None


def _too_deep(raw: bytes) -> str:
    """Where the nesting got too deep: pydantic's JSON parser stops there and names the line and column."""
    try:
        pydantic_core.from_json(raw)
    except ValueError as exc:
        return f"nested too deeply to read ({str(exc).removeprefix('recursion limit exceeded ')})"
    return "nested too deeply to read"


def load_submission(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a submission file; errors name the file and every problem."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError([f"{path}: no such file"])
    if path.stat().st_size > MAX_SUBMISSION_BYTES:
        raise SubmissionError(
            [f"{path}: {path.stat().st_size} bytes, over the {MAX_SUBMISSION_BYTES} byte limit"]
        )
    return parse_submission(path.read_bytes(), str(path))


def parse_submission(raw: bytes, where: str = "submission") -> dict[str, Any]:
    """Parse and validate a submission's bytes (a file's, or an upload's on the leaderboard server)."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_int=_parse_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SubmissionError([f"{where}: not valid JSON ({exc})"]) from None
    except RecursionError:
        raise SubmissionError(
            [f"{where}: {_too_deep(raw)}; a submission is at most five levels deep"]
        ) from None
    validate_submission(data)
    return data


# ----------------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------------


def load_countdown_prompt_set(
    source: str | None, *, n: int | None, seed: int, num_numbers: int = 3, split: str = "test"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Countdown tasks ``[{"id", "target", "nums"}]`` from a JSONL file, a hub dataset, or held-out generation."""
    from eval.countdown import task_from_row

    if n is not None and n < 1:
        raise ValueError(f"--countdown_n must be >= 1, got {n}")
    rows: list[dict[str, Any]] = []
    if source is None:
        from posttrain.data import HELDOUT_PERCENT, heldout_tasks

        count = n or 200
        for i, task in enumerate(heldout_tasks(count, seed=seed, num_numbers=num_numbers)):
            rows.append({"id": f"cd-{i:05d}", "target": task.target, "nums": list(task.nums)})
        return rows, {
            "heldout": True,
            "n_test": count,
            "seed": seed,
            "num_numbers": num_numbers,
            "heldout_percent": HELDOUT_PERCENT,
        }
    path = Path(source)
    if path.is_file():
        raw = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    raw.append((f"{path}: line {lineno}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {lineno}: invalid JSON ({exc.msg})") from None
        info: dict[str, Any] = {
            "file": str(path.resolve()),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        from datasets import load_dataset

        try:
            ds = load_dataset(source, split=split)
        except Exception as exc:
            raise ValueError(
                f"countdown prompt set {source!r}: not a file and not a loadable hub dataset "
                f"({type(exc).__name__}: {exc})"
            ) from None
        raw = [(f"{source} [{split}] row {i}", dict(row)) for i, row in enumerate(ds)]
        info = {"dataset": source, "split": split}
    else:
        raise ValueError(
            f"countdown prompt set {source!r}: no such file and not a hub dataset id (owner/name)"
        )
    for i, (where, row) in enumerate(raw):
        task = task_from_row(row, where)
        rid = row.get("id") if isinstance(row, dict) else None
        rows.append(
            {
                "id": str(rid) if rid is not None else f"cd-{i:05d}",
                "target": task.target,
                "nums": list(task.nums),
            }
        )
    if n is not None:
        rows = rows[:n]
    if not rows:
        raise ValueError(f"countdown prompt set {source!r} holds no tasks")
    info["n_tasks"] = len(rows)
    return rows, info


def _countdown_section(
    gen: _Generation,
    prompts_source: str | None,
    n: int | None,
    seed: int,
    template: str | None,
    max_new: int,
    best_of: int = 1,
    temperature: float = best_of_n.DEFAULT_TEMPERATURE,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Countdown section (held-out tasks by default, the model's answers and the rendered prompts) and, with
    ``best_of`` > 1, how the answers were picked: the first of ``best_of`` samples the rule verifier accepts."""
    from posttrain.countdown import make_prompt
    from posttrain.models import trained_template
    from posttrain.sampling import render_prompts

    rows, info = load_countdown_prompt_set(prompts_source, n=n, seed=seed)
    template = template or trained_template(gen.model) or "chat"
    prompts = [make_prompt(r["nums"], r["target"], template) for r in rows]
    picked: dict[str, Any] = {}
    if best_of > 1:
        picks = best_of_n.pick_countdown(rows, gen(prompts, max_new, n=best_of, temperature=temperature))
        completions = picks.responses
        verified = sum(r["verified"] for r in picks.records)
        picked = {"countdown_verifier": "rule", "countdown_verified": verified}
        logger.info(
            "best-of-%d on countdown: the rule verifier accepted %d of %d", best_of, verified, len(rows)
        )
    else:
        completions = [o[0] for o in gen(prompts, max_new)]
    texts = render_prompts(prompts, gen.tokenizer)
    items = [r | {"prompt": t, "completion": c} for r, t, c in zip(rows, texts, completions, strict=True)]
    section = {"prompt_source": info, "template": template, "max_new_tokens": max_new, "items": items}
    return section, picked


def judge_label(judge: JudgeConnection) -> str:
    """Who picked the UltraFeedback answers, for the metadata: model id, kind, and where (a base URL without
    credentials, or the in-process server's RM folder / judge name); any API key scrubbed."""
    desc = judge.description
    kind = desc.get("kind") or "endpoint"
    if judge.served:
        source = "" if judge.served == kind else f" from {judge.served}"
        label = f"{desc['model']} ({kind}, served in process{source})"
    else:
        label = f"{desc['model']} ({kind}) at {desc.get('base_url')}"
    return judge.client.redact(label)[:300]


def _ultrafeedback_section(
    gen: _Generation,
    prompts_source: str | None,
    n: int | None,
    max_new: int,
    best_of: int = 1,
    temperature: float = best_of_n.DEFAULT_TEMPERATURE,
    judge: JudgeConnection | None = None,
    concurrency: int = 8,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The UltraFeedback section (one answer per prompt, each item keyed by the prompt's sha256) and, with
    ``best_of`` > 1, how the answers were picked: the judge's highest-scored of ``best_of`` samples, scored as
    `eval.winrate` scores (same truncation to the endpoint's limit, counted with the model's tokenizer)."""
    from eval.winrate import load_prompt_set, prompt_id, scoring_budget, truncate_pair

    prompts, info = load_prompt_set(prompts_source, n=n)
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    picked: dict[str, Any] = {}
    if best_of > 1:
        if judge is None:
            raise ValueError(NEEDS_JUDGE)
        budget = scoring_budget(judge.max_reward_tokens, REWARD_TOKEN_MARGIN, concurrency)
        picks = best_of_n.pick_by_judge(
            prompts,
            gen(conversations, max_new, n=best_of, temperature=temperature),
            judge.client,
            lambda prompt, reply: truncate_pair(prompt, reply, gen.tokenizer, budget),
            concurrency=concurrency,
        )
        responses = picks.responses
        unscored = sum(r["all_failed"] for r in picks.records)
        picked = {"ultrafeedback_judge": judge_label(judge), "ultrafeedback_unscored": unscored}
        if unscored:
            logger.warning(
                "best-of-%d on ultrafeedback: %d of %d prompts had no candidate scored by %s and keep their first "
                "sample (metadata.best_of.ultrafeedback_unscored)",
                best_of,
                unscored,
                len(prompts),
                picked["ultrafeedback_judge"],
            )
    else:
        responses = [o[0] for o in gen(conversations, max_new)]
    items = [
        {"id": prompt_id(p), "prompt": p, "response": r} for p, r in zip(prompts, responses, strict=True)
    ]
    return {"prompt_source": info, "max_new_tokens": max_new, "items": items}, picked


def _metadata(
    gen: _Generation,
    method: str,
    team: str | None,
    max_new_tokens: int,
    best_of: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from eval.winrate import resolve_model_commit
    from posttrain.runtime import git_commit

    sampling = gen.params.to_dict()
    # Schema v1 keeps one value here: the largest of the built tasks'; each task section holds its own.
    sampling["max_new_tokens"] = max_new_tokens
    metadata = {
        "model": gen.model,
        "model_revision": gen.revision or resolve_model_commit(gen.model, None),
        "method": method,
        "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": gen.params.seed,
        "sampling": sampling,
        "backend": gen.backend,
        "team": team,
    }
    if best_of is not None:  # only then: a plain submission is byte-for-byte what it always was
        metadata["best_of"] = best_of
    return metadata


class _Generation:
    """One loaded model (loaded once for both tasks) and its sampling settings; calling it generates."""

    def __init__(self, model: str, revision: str | None, params: Any, backend: str, progress: bool):
        from posttrain.models import load_tokenizer
        from posttrain.sampling import SamplingParams, load_hf_model, resolve_backend

        self.model, self.revision, self.progress = model, revision, progress
        self.params = params or SamplingParams()
        self.backend = resolve_backend(backend, model)
        # The vLLM backend loads the model by name itself.
        self.generator, tokenizer = (
            load_hf_model(model, None, revision=revision) if self.backend == "hf" else (model, None)
        )
        self.tokenizer = tokenizer or load_tokenizer(model, revision=revision)

    def __call__(
        self, prompts: list[Any], max_new_tokens: int, *, n: int = 1, temperature: float | None = None
    ) -> list[list[str]]:
        """``n`` samples per prompt; ``temperature`` overrides the run's (the best-of-N candidates')."""
        from dataclasses import replace

        from posttrain.sampling import generate

        params = replace(self.params, max_new_tokens=max_new_tokens, n=n)
        if temperature is not None:
            params = replace(params, temperature=temperature)
        return generate(
            self.generator,
            prompts,
            params,
            tokenizer=self.tokenizer,
            backend=self.backend,
            revision=self.revision,
            progress=self.progress,
        )


def build_submission(
    *,
    model: str,
    method: str,
    tasks: Sequence[str] = TASKS,
    model_revision: str | None = None,
    countdown_prompts: str | None = None,
    countdown_n: int | None = None,
    countdown_seed: int = 1234,
    countdown_template: str | None = None,
    countdown_max_new_tokens: int = 256,
    ultrafeedback_prompts: str | None = None,
    ultrafeedback_n: int | None = None,
    ultrafeedback_max_new_tokens: int = 256,
    params: Any = None,
    backend: str = "auto",
    team: str | None = None,
    progress: bool = True,
    best_of: int = 1,
    best_of_temperature: float = best_of_n.DEFAULT_TEMPERATURE,
    judge: JudgeConnection | None = None,
    judge_concurrency: int = 8,
) -> dict[str, Any]:
    """Generate the answers for ``tasks`` and return the submission dict (validated).

    ``countdown_n`` / ``ultrafeedback_n`` None: every item of a given prompt file or dataset, the first
    `DEFAULT_SET_N` of a default set (generated Countdown tasks; the default or ``fixture`` UltraFeedback set).
    ``best_of`` > 1: each answer is picked among that many samples at ``best_of_temperature`` (Countdown: the
    rule verifier; UltraFeedback: ``judge``, `eval.winrate.connect_judge`), described in ``metadata.best_of``.
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"--tasks must name some of {list(TASKS)}, got {list(tasks)}")
    if not method or not method.strip():
        raise ValueError("--method must name the training method (e.g. sft, dpo, grpo)")
    best_of_n.check_best_of(best_of, best_of_temperature)
    if best_of > 1 and "ultrafeedback" in tasks and judge is None:
        raise ValueError(NEEDS_JUDGE)
    if countdown_n is None and countdown_prompts is None:
        countdown_n = DEFAULT_SET_N
    if ultrafeedback_n is None and ultrafeedback_prompts in (None, "fixture"):
        ultrafeedback_n = DEFAULT_SET_N
    gen = _Generation(model, model_revision, params, backend, progress)
    data: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    picked: dict[str, Any] = {"n": best_of, "temperature": float(best_of_temperature)}
    if "countdown" in tasks:
        data["countdown"], how = _countdown_section(
            gen,
            countdown_prompts,
            countdown_n,
            countdown_seed,
            countdown_template,
            countdown_max_new_tokens,
            best_of,
            best_of_temperature,
        )
        picked |= how
    if "ultrafeedback" in tasks:
        data["ultrafeedback"], how = _ultrafeedback_section(
            gen,
            ultrafeedback_prompts,
            ultrafeedback_n,
            ultrafeedback_max_new_tokens,
            best_of,
            best_of_temperature,
            judge,
            judge_concurrency,
        )
        picked |= how
    data["metadata"] = _metadata(
        gen,
        method,
        team,
        max(data[t]["max_new_tokens"] for t in TASKS if t in data),
        picked if best_of > 1 else None,
    )
    validate_submission(data)
    return data


def submission_path(directory: str | os.PathLike[str], model: str, method: str) -> Path:
    slug = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in f"{Path(model).name}-{method}")[:80]
    return Path(directory) / f"{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"


# ----------------------------------------------------------------------------------------------------------
# Upload
# ----------------------------------------------------------------------------------------------------------

_REFUSALS = {
    400: "the leaderboard rejected the request as malformed",
    401: "the leaderboard rejected LEADERBOARD_TOKEN (401 Unauthorized): check that the token is set and current",
    403: "the token is valid but not allowed to submit (403 Forbidden): the submission window may be closed or "
    "the team not registered",
    409: "the leaderboard already has this submission (409 Conflict): nothing was counted twice; change the "
    "model or answers to submit again",
    413: "the submission is too large for the leaderboard (413 Payload Too Large): submit fewer prompts or "
    "shorter answers (lower the max_new_tokens)",
    422: "the leaderboard could not accept the content (422 Unprocessable): it disagrees with the schema or the "
    "prompt set; compare your prompt files with the leaderboard's",
    429: "submission limit or rate limit reached (429 Too Many Requests)",
}


def _server_message(body: bytes, scrub: Any) -> str:
    """The server's error message, scrubbed before it is cut (a cut could leave part of an echoed token)."""
    text = scrub(body[:MAX_ANSWER_BYTES].decode("utf-8", errors="replace"))
    try:
        data = json.loads(text, parse_int=_parse_int)
    except (ValueError, RecursionError):  # not JSON, an over-long number, or absurdly deep
        return text[:300].strip()
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return str(err)[:300]
    return str(data)[:300]


class _RefuseRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would resend the Authorization header to the new address, as a GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 (urllib's signature)
        raise _Redirected(code, newurl)


class _Redirected(Exception):
    def __init__(self, code: int, location: str | None):
        super().__init__(code, location)
        self.code, self.location = code, location


def _redirect_error(code: int, location: str | None, url: str, path: Path) -> UploadError:
    """The refusal of a 3xx; it names the Location's host (and port), never its path or query."""
    host = ""
    if location:
        try:
            target = urlsplit(urljoin(url, location))
            host = target.hostname or ""
            if host and target.port:
                host = f"{host}:{target.port}"
        except ValueError:
            host = ""
    where = f"to {host}" if host else "(no usable Location header)"
    return UploadError(
        f"the leaderboard answered HTTP {code}, a redirect {where}; it was not followed, so the token went "
        f"nowhere else and nothing was submitted. Set LEADERBOARD_URL to the address the organisers gave "
        f"(if the redirect is expected, to its target). The file is kept at {path}; resend it with "
        f"`python -m eval.submit --upload {path}`"
    )


class _NoAnswer(Exception):
    """The request went out, but no complete answer came within the total deadline."""


def _exchange(
    request: urllib.request.Request, timeout_s: float, limit: int = MAX_ANSWER_BYTES
) -> tuple[int, Any, bytes]:
    """(status, headers, body) of one request (at most ``limit`` bytes of body), all within ``timeout_s`` in total.

    urllib's timeout bounds each socket read, not the whole exchange: a server that sends a byte now and then
    never trips it. So the exchange runs in a daemon thread and is abandoned at the deadline.
    """
    opener = urllib.request.build_opener(_RefuseRedirect)
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            with opener.open(request, timeout=timeout_s) as response:
                outcome["answer"] = response.status, response.headers, response.read(limit)
        except urllib.error.HTTPError as exc:  # 4xx/5xx (and 3xx urllib hands over as errors): an answer
            body = exc.read(MAX_ANSWER_BYTES) if exc.fp is not None else b""
            outcome["answer"] = exc.code, exc.headers, body
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            outcome["error"] = exc

    worker = threading.Thread(target=call, name="leaderboard-upload", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise _NoAnswer(f"no complete answer within --timeout_s {timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["answer"]


def _refusal(status: int, headers: Any, detail: str, path: Path) -> UploadError:
    base = _REFUSALS.get(status)
    if base is None and status >= 500:
        base = f"the leaderboard server failed ({status}); it is not your submission's fault: retry later"
    if base is None:
        base = f"the leaderboard refused the submission (HTTP {status})"
    if status == 429 and headers.get("Retry-After"):
        base += f"; the server says retry after {headers['Retry-After']} s"
    return UploadError(
        f"{base}.\n  server said: {detail or '(nothing)'}\n  the file is kept at {path}; resend it with "
        f"`python -m eval.submit --upload {path}`"
    )


def _checked_target(url: str, token: str | None, allow_http: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UploadError(f"LEADERBOARD_URL must be an http(s) URL, got {redact_url(url)!r}")
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme == "http" and not local and not allow_http:
        raise UploadError(
            "LEADERBOARD_URL uses plain http to a remote host: the token would travel unencrypted. Use https "
            "(or --allow_insecure_http if you really mean it)"
        )
    if not token:
        raise UploadError(
            "LEADERBOARD_URL is set but LEADERBOARD_TOKEN is not: export the token you were given"
        )


def _answer_json(body: bytes, scrub: Any) -> dict[str, Any]:
    """The server's answer as a dict for the receipt, with the token scrubbed wherever it was echoed."""
    text = scrub(body.decode("utf-8", errors="replace"))
    try:
        answer: Any = json.loads(text, parse_int=_parse_int) if body else {}
        # Scrubbed again once re-encoded: an escape in the JSON text may have hidden the token from the first pass.
        answer = json.loads(scrub(json.dumps(answer, default=repr)))
    except (ValueError, RecursionError):
        answer = {"raw": text[:1000]}
    return answer if isinstance(answer, dict) else {"answer": answer}


def upload_submission(
    path: str | os.PathLike[str],
    url: str,
    token: str | None,
    *,
    timeout_s: float = 60.0,
    allow_http: bool = False,
) -> dict[str, Any]:
    """POST the validated file to ``url``; returns the server's JSON answer; raises `UploadError` on refusal."""
    path = Path(path)
    load_submission(path)
    payload = path.read_bytes()
    _checked_target(url, token, allow_http)
    assert token  # checked above

    def scrub(text: str) -> str:  # a server may echo the token back: it never reaches a file or the screen
        return text.replace(token, "***").replace(json.dumps(token)[1:-1], "***")

    request = urllib.request.Request(
        url,
        data=payload,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": hashlib.sha256(payload).hexdigest(),
            "User-Agent": "posttrain-recipes/submit",
        },
    )
    shown = redact_url(url)
    resend = f"The file is kept at {path}; resend it with `python -m eval.submit --upload {path}`"
    try:
        status, headers, body = _exchange(request, timeout_s)
    except _Redirected as exc:
        raise _redirect_error(exc.code, exc.location, url, path) from None
    except urllib.error.URLError as exc:  # raised by urllib before the request was fully sent
        raise UploadError(
            f"could not reach the leaderboard at {shown} ({scrub(str(exc.reason))}); check LEADERBOARD_URL "
            f"and the network. {resend}"
        ) from None
    except (_NoAnswer, OSError, http.client.HTTPException) as exc:
        raise UploadError(
            f"the submission was sent to {shown}, but {scrub(str(exc) or type(exc).__name__)}: the leaderboard "
            f"may have received it. A resend is safe (its Idempotency-Key makes it count once). {resend}"
        ) from None
    if 300 <= status < 400:  # 300, 304, or 307/308 to a POST: never followed
        raise _redirect_error(status, headers.get("Location"), url, path)
    if status >= 400:
        raise _refusal(status, headers, _server_message(body, scrub), path)
    receipt = {
        "url": shown,
        "status": status,
        "answer": _answer_json(body, scrub),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "uploaded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(path.with_suffix(".receipt.json"), receipt)
    return receipt


def fetch_board_prompts(
    url: str, task: str, directory: str | os.PathLike[str], timeout_s: float = 60.0
) -> Path:
    """Download a leaderboard's answer-free prompt file ``<board>/prompts/<task>.jsonl`` (the self-hosted board,
    `leaderboard.app`, serves them) into ``directory``; no token is sent. Returns the saved file."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UploadError(f"LEADERBOARD_URL must be an http(s) URL, got {redact_url(url)!r}")
    base = url.split("?")[0].rstrip("/").removesuffix("/api/submissions")
    source = f"{base}/prompts/{task}.jsonl"
    request = urllib.request.Request(source, headers={"User-Agent": "posttrain-recipes/submit"})
    try:
        status, _headers, body = _exchange(request, timeout_s, MAX_SUBMISSION_BYTES)
    except _Redirected as exc:
        raise UploadError(
            f"{redact_url(source)} answered a redirect ({exc.code}); it was not followed"
        ) from None
    except (urllib.error.URLError, _NoAnswer, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UploadError(
            f"could not download the board's {task} prompts from {redact_url(source)} ({reason})"
        ) from None
    if status == 404:
        raise NoBoardPrompts(f"the leaderboard at {redact_url(base)} serves no {task} prompts (404)")
    if status != 200:
        raise UploadError(
            f"the leaderboard at {redact_url(base)} answered HTTP {status} for {redact_url(source)}: pass "
            f"--countdown_prompts/--ultrafeedback_prompts FILE instead of --board_prompts"
        )
    if len(body) >= MAX_SUBMISSION_BYTES:
        raise UploadError(f"the board's {task} prompt file is over {MAX_SUBMISSION_BYTES} bytes")
    path = Path(directory) / "board-prompts" / f"{task}-{hashlib.sha256(body).hexdigest()[:12]}.jsonl"
    atomic_write_text(path, body.decode("utf-8", errors="replace"))
    return path


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.submit", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--model_revision", default=None)
    p.add_argument("--method", default=None, help="training method, e.g. sft, dpo, rloo, grpo (required)")
    p.add_argument("--team", default=None)
    p.add_argument("--tasks", default="countdown,ultrafeedback", help="comma-separated subset of both tasks")
    p.add_argument(
        "--countdown_prompts", default=None, help="JSONL file or hub dataset (default: held-out tasks)"
    )
    p.add_argument(
        "--countdown_n",
        type=int,
        default=None,
        help=f"first N tasks (default: all tasks of --countdown_prompts; {DEFAULT_SET_N} generated ones without it)",
    )
    p.add_argument("--countdown_seed", type=int, default=1234)
    p.add_argument(
        "--countdown_template", default=None, help="default: the model's training template, else chat"
    )
    p.add_argument("--countdown_max_new_tokens", type=int, default=256)
    p.add_argument("--ultrafeedback_prompts", default=None, help="file, 'fixture' or hub dataset")
    p.add_argument(
        "--ultrafeedback_n",
        type=int,
        default=None,
        help=f"first N prompts (default: all prompts of a given file/dataset; {DEFAULT_SET_N} of the default "
        f"or fixture set)",
    )
    p.add_argument("--ultrafeedback_max_new_tokens", type=int, default=256)
    p.add_argument(
        "--board_prompts",
        action="store_true",
        help="take the prompt sets from the leaderboard at --url/$LEADERBOARD_URL (<url>/prompts/<task>.jsonl, "
        "as the self-hosted board serves them), every item",
    )
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--backend", default="auto", choices=("auto", "hf", "vllm"))
    p.add_argument("--output_dir", default="submissions")
    p.add_argument("--url", default=None, help="default: $LEADERBOARD_URL (no upload when unset)")
    p.add_argument("--token_env", default="LEADERBOARD_TOKEN", help="env variable holding the bearer token")
    p.add_argument("--upload", metavar="FILE", default=None, help="validate and upload an existing file only")
    p.add_argument("--validate", metavar="FILE", default=None, help="validate a file and exit")
    p.add_argument("--allow_insecure_http", action="store_true")
    p.add_argument("--timeout_s", type=float, default=60.0)
    p.add_argument("--no_progress", action="store_true")
    b = p.add_argument_group("best-of-N (metadata.best_of)")
    b.add_argument(
        "--best_of",
        type=int,
        default=1,
        help="N > 1: sample N answers per prompt and submit one: Countdown the first the rule verifier accepts, "
        "UltraFeedback the judge's best (needs a judge below); 1: off",
    )
    b.add_argument(
        "--best_of_temperature",
        type=float,
        default=best_of_n.DEFAULT_TEMPERATURE,
        help="sampling temperature of the N candidates (> 0; the seed is --seed)",
    )
    b.add_argument("--reward_url", default=None, help="the UltraFeedback judge: OpenAI-compatible base URL")
    b.add_argument(
        "--reward_model", default="auto", help="model id at the endpoint (auto: the only one listed)"
    )
    b.add_argument("--api_key_env", default="REWARD_API_KEY", help="env variable holding the judge's key")
    serve = b.add_mutually_exclusive_group()
    serve.add_argument("--serve_rm", default=None, help="start the local reward server on this RM folder")
    serve.add_argument(
        "--serve_judge",
        default=None,
        choices=("verifiable",),
        help="start the local reward server with this judge",
    )
    b.add_argument("--reward_cache", default="runs/reward-cache/scores.jsonl", help="'' disables the cache")
    b.add_argument("--concurrency", type=int, default=8, help="judge requests in flight at most")
    return p


def _upload(path: Path, args: argparse.Namespace) -> None:
    url = args.url or os.environ.get("LEADERBOARD_URL")
    if not url:
        print(f"LEADERBOARD_URL is not set: not uploaded. The submission is at {path}")
        return
    receipt = upload_submission(
        path,
        url,
        os.environ.get(args.token_env),
        timeout_s=args.timeout_s,
        allow_http=args.allow_insecure_http,
    )
    print(
        f"uploaded {path} to {receipt['url']} (HTTP {receipt['status']}): {json.dumps(receipt['answer'])[:300]}"
    )
    print(f"receipt: {path.with_suffix('.receipt.json')}")


def _use_board_prompts(args: argparse.Namespace, tasks: list[str]) -> None:
    """``--board_prompts``: download each task's prompt file from the board and submit on exactly those."""
    url = args.url or os.environ.get("LEADERBOARD_URL")
    if not url:
        raise ValueError("--board_prompts needs the board's address: --url URL or LEADERBOARD_URL")
    given = [f for f in ("countdown_prompts", "ultrafeedback_prompts") if getattr(args, f)]
    if given:
        raise ValueError(f"--board_prompts takes the prompts from the board; leave out --{given[0]}")
    for task in list(tasks):
        if task not in TASKS:
            continue
        try:
            path = fetch_board_prompts(url, task, args.output_dir, args.timeout_s)
        except NoBoardPrompts as exc:
            tasks.remove(task)  # the board does not score it: submitting it would be refused
            print(f"{exc}: {task} left out of this submission")
            continue
        setattr(args, f"{task}_prompts", str(path))
        print(f"{task} prompts from the board: {path}")
    if not tasks:
        raise UploadError(
            f"the leaderboard at {redact_url(url)} serves no prompt files (404 for every task): pass "
            f"--countdown_prompts/--ultrafeedback_prompts FILE, or BOARD_PROMPTS= for make (the default sets)"
        )


def _connect_judge(args: argparse.Namespace, tasks: list[str], api_key: str | None) -> JudgeConnection | None:
    """The UltraFeedback judge of a best-of-N submission, or None when none is needed; a judge option without
    ``--best_of`` N > 1 is an error (it would pick nothing)."""
    from eval.winrate import connect_judge

    given = [flag for flag in ("reward_url", "serve_rm", "serve_judge") if getattr(args, flag)]
    if args.best_of == 1:
        if given:
            raise ValueError(
                f"--{given[0]} names the judge that picks among best-of-N candidates; it needs --best_of N > 1 "
                f"(BEST_OF=N for make), or leave it out"
            )
        return None
    if "ultrafeedback" not in tasks:
        return None
    if not given:
        raise ValueError(NEEDS_JUDGE)
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be >= 1, got {args.concurrency}")
    return connect_judge(
        reward_url=args.reward_url,
        reward_model=args.reward_model,
        api_key=api_key,
        serve_rm=args.serve_rm,
        serve_judge=args.serve_judge,
        reward_cache=args.reward_cache,
    )


def main(argv: Sequence[str] | None = None) -> Path:
    from eval.winrate import model_not_available_message
    from posttrain.models import ModelNotAvailableError
    from posttrain.sampling import SamplingParams
    from rewards.api_retry import redact

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    judge = None
    try:
        if args.validate or args.upload:
            path = Path(args.validate or args.upload)
            data = load_submission(path)
            counts = {t: len(data[t]["items"]) for t in TASKS if t in data}
            print(f"{path}: valid submission (schema {SCHEMA_VERSION}; items: {counts})")
            if args.upload:
                _upload(path, args)
            return path
        if not args.method:
            raise ValueError(
                "--method is required (METHOD=... for make): the training method, e.g. sft or grpo"
            )
        params = SamplingParams(
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            seed=args.seed,
            batch_size=args.batch_size,
        )
        best_of_n.check_best_of(args.best_of, args.best_of_temperature)
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        if args.board_prompts:
            _use_board_prompts(args, tasks)
        judge = _connect_judge(args, tasks, api_key)
        data = build_submission(
            model=args.model,
            method=args.method,
            tasks=tasks,
            model_revision=args.model_revision,
            countdown_prompts=args.countdown_prompts,
            countdown_n=args.countdown_n,
            countdown_seed=args.countdown_seed,
            countdown_template=args.countdown_template,
            countdown_max_new_tokens=args.countdown_max_new_tokens,
            ultrafeedback_prompts=args.ultrafeedback_prompts,
            ultrafeedback_n=args.ultrafeedback_n,
            ultrafeedback_max_new_tokens=args.ultrafeedback_max_new_tokens,
            params=params,
            backend=args.backend,
            team=args.team,
            progress=not args.no_progress,
            best_of=args.best_of,
            best_of_temperature=args.best_of_temperature,
            judge=judge,
            judge_concurrency=args.concurrency,
        )
        path = submission_path(args.output_dir, args.model, args.method)
        atomic_write_json(path, data)
        counts = {t: len(data[t]["items"]) for t in TASKS if t in data}
        print(f"wrote a valid submission to {path} (items: {counts})")
        _upload(path, args)
        return path
    except (SubmissionError, UploadError, ValueError, FileNotFoundError, RewardEndpointError) as exc:
        print(redact(f"error: {exc}", api_key), file=sys.stderr)  # a judge endpoint may echo its key
        raise SystemExit(2) from None
    except ModelNotAvailableError as exc:
        print(model_not_available_message(exc), file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if judge is not None:
            judge.close()


if __name__ == "__main__":
    run_cli(main)

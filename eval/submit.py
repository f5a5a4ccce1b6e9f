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

How many: every item of a given prompt file or dataset (the leaderboard's sets are sent whole); only for the
default sets (generated Countdown tasks, the default/fixture UltraFeedback prompts) the first 32 (a CPU-sized
run). ``--countdown_n`` / ``--ultrafeedback_n`` take the first N in either case.

The file (schema version 1; `validate_submission` checks every field and reports all problems at once)::

    {
      "schema_version": 1,
      "metadata": {
        "model": str, "model_revision": str | null (the resolved hub commit when none was asked for),
        "method": str (non-empty),
        "git_commit": str | null, "created": ISO-8601 str, "seed": int >= 0,
        "sampling": {"max_new_tokens": int >= 1, "temperature": number >= 0, "top_p": number in (0, 1],
                     "top_k": int >= 0, "n": 1, "seed": int, "batch_size": int | null},
                                   # max_new_tokens here: the largest of the tasks'; each task's own is below
        "backend": "hf" | "vllm", "team": str | null
      },
      "countdown": {                       # optional, but at least one task must be present
        "prompt_source": object, "template": str, "max_new_tokens": int >= 1 (optional; written by this tool),
        "items": [{"id": str (unique), "target": int >= 0, "nums": [int >= 0, ...] (>= 2),
                   "prompt": str, "completion": str}, ...]   # >= 1 item
      },
      "ultrafeedback": {
        "prompt_source": object, "max_new_tokens": int >= 1 (optional; written by this tool),
        "items": [{"id": str (unique; the sha256 hex of the prompt's UTF-8, checked), "prompt": str (non-empty),
                   "response": str}, ...]
      }
    }

No other keys are allowed at any level (a typo is an error, not silently dropped). Completions are model output
and may be any string, empty included. Files go to ``submissions/<model>-<method>-<UTC time>.json``
(atomically). Upload: ``POST`` of the JSON to ``LEADERBOARD_URL`` with ``Authorization: Bearer
$LEADERBOARD_TOKEN`` and an ``Idempotency-Key`` (the file's sha256, so a resend of the same file cannot count
twice). The token is never printed or saved; it is refused over plain http except to localhost, and a redirect
(3xx) is refused rather than followed (following would resend the token to another address, as a GET that
loses the submission). Every refusal (3xx, 401/403/409/413/422/429/5xx, no connection) ends with a message that
says what happened and what to do; the file stays on disk either way. Without ``LEADERBOARD_URL`` the file is written and its path printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime, timezone
from numbers import Integral, Real
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from eval.reward_client import redact_url
from posttrain.io import atomic_write_json

logger = logging.getLogger("eval.submit")

SCHEMA_VERSION = 1
TASKS = ("countdown", "ultrafeedback")
MAX_SUBMISSION_BYTES = 50 * 1024 * 1024
DEFAULT_SET_N = 32  # items taken from the default (generated / fixture) prompt sets when no N is given


class SubmissionError(ValueError):
    """The submission breaks the schema; ``problems`` lists every bad field with its path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"invalid submission ({len(problems)} problem(s)):\n  {shown}{more}")


class UploadError(RuntimeError):
    """The leaderboard refused the submission or could not be reached."""


# ----------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, problem: str) -> None:
        self.problems.append(f"{path}: {problem}")

    def obj(self, value: Any, path: str, required: dict[str, Any], optional: Sequence[str] = ()) -> bool:
        if not isinstance(value, dict):
            self.fail(path, f"must be an object, got {type(value).__name__}")
            return False
        for key in required:
            if key not in value:
                self.fail(f"{path}.{key}", "is missing")
        for key in value:
            if key not in required and key not in optional:
                self.fail(f"{path}.{key}", f"unknown field (allowed: {sorted([*required, *optional])})")
        return True

    def check(self, ok: bool, path: str, problem: str) -> None:
        if not ok:
            self.fail(path, problem)


def _check_sampling(c: _Checker, s: Any, path: str) -> None:
    fields = dict.fromkeys(("max_new_tokens", "temperature", "top_p", "top_k", "n", "seed", "batch_size"))
    if not c.obj(s, path, fields):
        return
    if "max_new_tokens" in s:
        c.check(
            _is_int(s["max_new_tokens"]) and s["max_new_tokens"] >= 1,
            f"{path}.max_new_tokens",
            f"must be an int >= 1, got {s['max_new_tokens']!r}",
        )
    if "temperature" in s:
        c.check(
            _is_num(s["temperature"]) and s["temperature"] >= 0,
            f"{path}.temperature",
            f"must be a number >= 0, got {s['temperature']!r}",
        )
    if "top_p" in s:
        c.check(
            _is_num(s["top_p"]) and 0 < s["top_p"] <= 1,
            f"{path}.top_p",
            f"must be a number in (0, 1], got {s['top_p']!r}",
        )
    for key in ("top_k", "seed"):
        if key in s:
            c.check(_is_int(s[key]) and s[key] >= 0, f"{path}.{key}", f"must be an int >= 0, got {s[key]!r}")
    if "n" in s:
        c.check(
            s["n"] == 1 and _is_int(s["n"]), f"{path}.n", f"must be 1 (one answer per prompt), got {s['n']!r}"
        )
    if "batch_size" in s:
        c.check(
            s["batch_size"] is None or (_is_int(s["batch_size"]) and s["batch_size"] >= 1),
            f"{path}.batch_size",
            f"must be null or an int >= 1, got {s['batch_size']!r}",
        )


def _check_metadata(c: _Checker, m: Any) -> None:
    required = dict.fromkeys(
        ("model", "model_revision", "method", "git_commit", "created", "seed", "sampling", "backend")
    )
    if not c.obj(m, "metadata", required, optional=("team",)):
        return
    for key in ("model", "method"):
        if key in m:
            c.check(
                isinstance(m[key], str) and bool(m[key].strip()),
                f"metadata.{key}",
                f"must be a non-empty string, got {m[key]!r}",
            )
    for key in ("model_revision", "git_commit", "team"):
        if key in m:
            c.check(
                m[key] is None or isinstance(m[key], str),
                f"metadata.{key}",
                f"must be a string or null, got {m[key]!r}",
            )
    if "created" in m:
        ok = isinstance(m["created"], str)
        if ok:
            try:
                datetime.fromisoformat(m["created"])
            except ValueError:
                ok = False
        c.check(ok, "metadata.created", f"must be an ISO-8601 timestamp string, got {m['created']!r}")
    if "seed" in m:
        c.check(
            _is_int(m["seed"]) and m["seed"] >= 0, "metadata.seed", f"must be an int >= 0, got {m['seed']!r}"
        )
    if "backend" in m:
        c.check(
            m["backend"] in ("hf", "vllm"),
            "metadata.backend",
            f"must be 'hf' or 'vllm', got {m['backend']!r}",
        )
    if "sampling" in m:
        _check_sampling(c, m["sampling"], "metadata.sampling")


def _check_items(c: _Checker, items: Any, path: str, check_item) -> None:
    if not isinstance(items, list) or not items:
        c.fail(path, "must be a non-empty list")
        return
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if check_item(c, item, where) and isinstance(item.get("id"), str):
            if item["id"] in seen:
                c.fail(f"{where}.id", f"duplicate id {item['id']!r} (also at index {seen[item['id']]})")
            seen.setdefault(item["id"], i)


def _check_countdown_item(c: _Checker, item: Any, where: str) -> bool:
    if not c.obj(item, where, dict.fromkeys(("id", "target", "nums", "prompt", "completion"))):
        return False
    if "id" in item:
        c.check(
            isinstance(item["id"], str) and bool(item["id"]),
            f"{where}.id",
            f"must be a non-empty string, got {item['id']!r}",
        )
    if "target" in item:
        c.check(
            _is_int(item["target"]) and item["target"] >= 0,
            f"{where}.target",
            f"must be an int >= 0, got {item['target']!r}",
        )
    if "nums" in item:
        nums = item["nums"]
        c.check(
            isinstance(nums, list) and len(nums) >= 2 and all(_is_int(x) and x >= 0 for x in nums),
            f"{where}.nums",
            f"must be a list of at least 2 ints >= 0, got {nums!r:.80}",
        )
    for key in ("prompt", "completion"):
        if key in item:
            c.check(
                isinstance(item[key], str),
                f"{where}.{key}",
                f"must be a string, got {type(item[key]).__name__}",
            )
    return True


def _check_section_max_new_tokens(c: _Checker, section: dict[str, Any], path: str) -> None:
    if "max_new_tokens" in section:
        value = section["max_new_tokens"]
        c.check(
            _is_int(value) and value >= 1, f"{path}.max_new_tokens", f"must be an int >= 1, got {value!r}"
        )


def _check_uf_item(c: _Checker, item: Any, where: str) -> bool:
    if not c.obj(item, where, dict.fromkeys(("id", "prompt", "response"))):
        return False
    if "id" in item:
        c.check(
            isinstance(item["id"], str) and bool(item["id"]),
            f"{where}.id",
            f"must be a non-empty string, got {item['id']!r}",
        )
    if "prompt" in item:
        c.check(
            isinstance(item["prompt"], str) and bool(item["prompt"].strip()),
            f"{where}.prompt",
            "must be a non-empty string",
        )
    if "response" in item:
        c.check(
            isinstance(item["response"], str),
            f"{where}.response",
            f"must be a string, got {type(item['response']).__name__}",
        )
    if isinstance(item.get("id"), str) and item["id"] and isinstance(item.get("prompt"), str):
        expected = hashlib.sha256(item["prompt"].encode()).hexdigest()
        c.check(
            item["id"] == expected,
            f"{where}.id",
            f"must be the sha256 of the prompt ({expected}), got {item['id'][:80]!r}",
        )
    return True


def validate_submission(data: Any) -> None:
    """Raise `SubmissionError` listing every problem (field path + what is wrong); return None when valid."""
    c = _Checker()
    if not c.obj(data, "submission", {"schema_version": None, "metadata": None}, optional=TASKS):
        raise SubmissionError(c.problems)
    if "schema_version" in data:
        c.check(
            data["schema_version"] == SCHEMA_VERSION and _is_int(data["schema_version"]),
            "submission.schema_version",
            f"must be {SCHEMA_VERSION}, got {data['schema_version']!r}",
        )
    if "metadata" in data:
        _check_metadata(c, data["metadata"])
    if not any(task in data for task in TASKS):
        c.fail("submission", f"holds no task: add at least one of {list(TASKS)}")
    if "countdown" in data:
        section = data["countdown"]
        if c.obj(
            section,
            "countdown",
            dict.fromkeys(("prompt_source", "template", "items")),
            optional=("max_new_tokens",),
        ):
            _check_section_max_new_tokens(c, section, "countdown")
            if "prompt_source" in section:
                c.check(
                    isinstance(section["prompt_source"], dict), "countdown.prompt_source", "must be an object"
                )
            if "template" in section:
                c.check(
                    isinstance(section["template"], str) and bool(section["template"]),
                    "countdown.template",
                    "must be a non-empty string",
                )
            if "items" in section:
                _check_items(c, section["items"], "countdown.items", _check_countdown_item)
    if "ultrafeedback" in data:
        section = data["ultrafeedback"]
        if c.obj(
            section, "ultrafeedback", dict.fromkeys(("prompt_source", "items")), optional=("max_new_tokens",)
        ):
            _check_section_max_new_tokens(c, section, "ultrafeedback")
            if "prompt_source" in section:
                c.check(
                    isinstance(section["prompt_source"], dict),
                    "ultrafeedback.prompt_source",
                    "must be an object",
                )
            if "items" in section:
                _check_items(c, section["items"], "ultrafeedback.items", _check_uf_item)
    if c.problems:
        raise SubmissionError(c.problems)


def load_submission(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a submission file; errors name the file and every problem."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError([f"{path}: no such file"])
    if path.stat().st_size > MAX_SUBMISSION_BYTES:
        raise SubmissionError(
            [f"{path}: {path.stat().st_size} bytes, over the {MAX_SUBMISSION_BYTES} byte limit"]
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SubmissionError([f"{path}: not valid JSON ({exc})"]) from None
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
) -> dict[str, Any]:
    """Generate the answers for ``tasks`` and return the submission dict (validated).

    ``countdown_n`` / ``ultrafeedback_n`` None: every item of a given prompt file or dataset, the first
    `DEFAULT_SET_N` of a default set (generated Countdown tasks; the default or ``fixture`` UltraFeedback set).
    """
    from dataclasses import replace

    from eval.winrate import load_prompt_set, prompt_id, resolve_model_commit
    from posttrain.countdown import make_prompt
    from posttrain.models import load_tokenizer, trained_template
    from posttrain.runtime import git_commit
    from posttrain.sampling import SamplingParams, generate, load_hf_model, render_prompts, resolve_backend

    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"--tasks must name some of {list(TASKS)}, got {list(tasks)}")
    if not method or not method.strip():
        raise ValueError("--method must name the training method (e.g. sft, dpo, grpo)")
    params = params or SamplingParams()
    chosen = resolve_backend(backend, model)
    # Load once for both tasks (the vLLM backend loads by name itself).
    generator, tokenizer = (
        load_hf_model(model, None, revision=model_revision) if chosen == "hf" else (model, None)
    )
    if tokenizer is None:
        tokenizer = load_tokenizer(model, revision=model_revision)
    data: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    if countdown_n is None and countdown_prompts is None:
        countdown_n = DEFAULT_SET_N
    if ultrafeedback_n is None and ultrafeedback_prompts in (None, "fixture"):
        ultrafeedback_n = DEFAULT_SET_N
    if "countdown" in tasks:
        rows, info = load_countdown_prompt_set(countdown_prompts, n=countdown_n, seed=countdown_seed)
        template = countdown_template or trained_template(model) or "chat"
        prompts = [make_prompt(r["nums"], r["target"], template) for r in rows]
        outs = generate(
            generator,
            prompts,
            replace(params, max_new_tokens=countdown_max_new_tokens),
            tokenizer=tokenizer,
            backend=chosen,
            revision=model_revision,
            progress=progress,
        )
        texts = render_prompts(prompts, tokenizer)
        data["countdown"] = {
            "prompt_source": info,
            "template": template,
            "max_new_tokens": countdown_max_new_tokens,
            "items": [
                r | {"prompt": t, "completion": o[0]} for r, t, o in zip(rows, texts, outs, strict=True)
            ],
        }
    if "ultrafeedback" in tasks:
        prompts, info = load_prompt_set(ultrafeedback_prompts, n=ultrafeedback_n)
        outs = generate(
            generator,
            [[{"role": "user", "content": p}] for p in prompts],
            replace(params, max_new_tokens=ultrafeedback_max_new_tokens),
            tokenizer=tokenizer,
            backend=chosen,
            revision=model_revision,
            progress=progress,
        )
        data["ultrafeedback"] = {
            "prompt_source": info,
            "max_new_tokens": ultrafeedback_max_new_tokens,
            "items": [
                {"id": prompt_id(p), "prompt": p, "response": o[0]}
                for p, o in zip(prompts, outs, strict=True)
            ],
        }
    sampling = params.to_dict()
    # Schema v1 keeps one value here: the largest of the built tasks'; each task section holds its own.
    sampling["max_new_tokens"] = max(data[t]["max_new_tokens"] for t in TASKS if t in data)
    data["metadata"] = {
        "model": model,
        "model_revision": model_revision or resolve_model_commit(model, None),
        "method": method,
        "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": params.seed,
        "sampling": sampling,
        "backend": chosen,
        "team": team,
    }
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


def _server_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body[:300].decode(errors="replace").strip()
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
    opener = urllib.request.build_opener(_RefuseRedirect)
    try:
        with opener.open(request, timeout=timeout_s) as response:
            body = response.read()
            status = response.status
        if 300 <= status < 400:  # a 3xx that no handler treated as an error
            raise _Redirected(status, response.headers.get("Location"))
    except _Redirected as exc:
        raise _redirect_error(exc.code, exc.location, url, path) from None
    except urllib.error.HTTPError as exc:
        body = exc.read() if exc.fp is not None else b""
        status = exc.code
        if 300 <= status < 400:  # 300, 304, or 307/308 to a POST: urllib hands them over as errors
            raise _redirect_error(status, exc.headers.get("Location"), url, path) from None
        detail = _server_message(body)
        base = _REFUSALS.get(status)
        if base is None and status >= 500:
            base = f"the leaderboard server failed ({status}); it is not your submission's fault: retry later"
        if base is None:
            base = f"the leaderboard refused the submission (HTTP {status})"
        if status == 429 and exc.headers.get("Retry-After"):
            base += f"; the server says retry after {exc.headers['Retry-After']} s"
        raise UploadError(
            f"{base}.\n  server said: {detail or '(nothing)'}\n  the file is kept at {path}; resend it with "
            f"`python -m eval.submit --upload {path}`"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UploadError(
            f"could not reach the leaderboard at {shown} ({reason}); check LEADERBOARD_URL and the network. "
            f"The file is kept at {path}; resend it with `python -m eval.submit --upload {path}`"
        ) from None
    try:
        answer = json.loads(body) if body else {}
    except json.JSONDecodeError:
        answer = {"raw": body[:1000].decode(errors="replace")}
    answer = answer if isinstance(answer, dict) else {"answer": answer}
    receipt = {
        "url": shown,
        "status": status,
        "answer": answer,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "uploaded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(path.with_suffix(".receipt.json"), receipt)
    return receipt


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


def main(argv: Sequence[str] | None = None) -> Path:
    from eval.winrate import model_not_available_message
    from posttrain.models import ModelNotAvailableError
    from posttrain.sampling import SamplingParams

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
        data = build_submission(
            model=args.model,
            method=args.method,
            tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
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
        )
        path = submission_path(args.output_dir, args.model, args.method)
        atomic_write_json(path, data)
        counts = {t: len(data[t]["items"]) for t in TASKS if t in data}
        print(f"wrote a valid submission to {path} (items: {counts})")
        _upload(path, args)
        return path
    except (SubmissionError, UploadError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ModelNotAvailableError as exc:
        print(model_not_available_message(exc), file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

"""Client side of reward scoring through an OpenAI-compatible endpoint (Nemotron-70B-Reward or `eval.reward_server`).

Request: ``client.chat.completions.create(model=..., messages=[{"role": "user", "content": prompt},
{"role": "assistant", "content": response}])`` -- plain messages, never a chat-templated string.

Response shapes `parse_reward` accepts (a ChatCompletion object or its dict), first match wins:
1. ``choices[0].message.content == "reward:<float>"`` (Llama-3.1-Nemotron-70B-Reward; spaces around the colon
   and an upper-case key are tolerated; the content may list other ``name:value`` pairs separated by commas,
   as long as one of them is ``reward``). The number is a plain ASCII decimal (``-1``, ``0.5``, ``1.5e-2``):
   no ``_`` separators, no non-ASCII digits, nothing after it; a key given twice is an error.
2. The logprobs fallback, used only when the content has no ``reward`` key at all (empty or another format):
   ``choices[0].logprobs.content`` holds an entry whose ``token`` is ``"reward"``; its ``logprob`` (a JSON
   number, not a string) is the score (the same number, in the form NVIDIA's API also returns it).
Anything else raises `RewardParseError` (never a silent 0): an error body, no choices, a bare number, a content
without a ``reward`` key and no logprob, a ``reward`` value that is not a finite number (``reward:nan``,
``reward:abc``: an error even when a logprob is present), text after the number, a plain string body (what the
openai client returns when the server sends non-JSON).

`RewardClient` adds what a long evaluation needs: an on-disk cache keyed by (endpoint model, messages) so a
re-run or a resumed run never pays for a score twice, retries with exponential backoff (and ``Retry-After``) on
429, 408/409, 5xx, timeouts and dropped connections (an unparseable body is retried once only: it is rarely
transient), and a fatal stop on a refused key
(401/403) or an unknown model (404) instead of failing every item one by one. The API key is read from an
environment variable by the caller and is never logged or written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]

_NAME_VALUE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_\- ]*?)\s*:\s*(\S.*?)\s*$", re.S)
# A plain ASCII decimal: no "_" separators, no non-ASCII digits (float() would accept both), nothing around it.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
# Does the content name a ``reward`` key at all (then it must parse; no logprobs fallback)?
_REWARD_KEY = re.compile(r"(?:^|,)\s*reward\s*:", re.I)


class RewardParseError(ValueError):
    """The endpoint's answer holds no readable reward; the item is an error, never a score of 0."""


class RewardEndpointError(RuntimeError):
    """A refusal that would fail every item (bad key, unknown model): the run stops with this message."""


# ----------------------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------------------


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _finite(value: Any, where: str) -> float:
    """A JSON number (int or float, never a bool or a string) that is finite."""
    if isinstance(value, bool):
        raise RewardParseError(f"{where} is a boolean, not a number")
    if not isinstance(value, (int, float)):
        raise RewardParseError(f"{where} is not a number: {str(value)[:80]!r}")
    number = float(value)
    if not math.isfinite(number):
        raise RewardParseError(f"{where} is not finite: {value!r}")
    return number


def _number_text(text: str, where: str) -> float:
    """A strict ASCII decimal in text form (the content's ``reward:<float>``)."""
    if text.strip().lower() in _NON_FINITE:
        raise RewardParseError(f"{where} is not finite: {text!r}")
    if not _NUMBER.fullmatch(text):
        raise RewardParseError(f"{where} is not a number: {text[:80]!r}")
    number = float(text)
    if not math.isfinite(number):
        raise RewardParseError(f"{where} is not finite: {text!r}")
    return number


def _from_content(content: Any) -> float | None:
    """The ``reward`` value of a ``name:value[,name:value...]`` content; None when there is no content."""
    if content is None or (isinstance(content, str) and not content.strip()):
        return None
    if not isinstance(content, str):
        raise RewardParseError(
            f"message content is {type(content).__name__}, expected a 'reward:<float>' string"
        )
    pairs: dict[str, str] = {}
    for part in content.split(","):
        match = _NAME_VALUE.match(part)
        if not match:
            raise RewardParseError(f"message content is not 'reward:<float>': {content[:120]!r}")
        name = match.group(1).strip().lower()
        if name in pairs:
            raise RewardParseError(f"message content gives the key {name!r} twice: {content[:120]!r}")
        pairs[name] = match.group(2)
    if "reward" not in pairs:
        raise RewardParseError(
            f"message content has no 'reward' value (keys: {sorted(pairs)}); this parser reads the "
            f"Llama-3.1-Nemotron-70B-Reward format 'reward:<float>'"
        )
    return _number_text(pairs["reward"], "the 'reward' value in the message content")


def _from_logprobs(logprobs: Any) -> float | None:
    entries = _get(logprobs, "content") if logprobs is not None else None
    if not entries:
        return None
    if not isinstance(entries, (list, tuple)):
        raise RewardParseError(f"logprobs.content is {type(entries).__name__}, expected a list")
    for entry in entries:
        token = _get(entry, "token")
        if isinstance(token, str) and token.strip().lower() == "reward":
            return _finite(_get(entry, "logprob"), "logprobs.content[token='reward'].logprob")
    return None


def parse_reward(response: Any) -> float:
    """The reward in an OpenAI chat completion (object or dict) in the Nemotron-70B-Reward format.

    Raises `RewardParseError` naming what is wrong when no finite reward can be read.
    """
    if response is None:
        raise RewardParseError("empty response (None)")
    if isinstance(response, (str, bytes)):
        text = response.decode(errors="replace") if isinstance(response, bytes) else response
        raise RewardParseError(f"the endpoint answered with a non-JSON body: {text[:120]!r}")
    if hasattr(response, "model_dump") and not isinstance(response, dict):
        response = response.model_dump()
    if not isinstance(response, dict):
        raise RewardParseError(f"expected a chat completion or its dict, got {type(response).__name__}")
    error = response.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else error
        raise RewardParseError(f"the endpoint answered with an error: {str(message)[:200]}")
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        raise RewardParseError(
            f"the response has no choices (keys: {sorted(response)[:10]}); not a chat completion"
        )
    choice = choices[0]
    if not isinstance(choice, dict):
        raise RewardParseError(f"choices[0] is {type(choice).__name__}, expected an object")
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    content_error: RewardParseError | None = None
    try:
        value = _from_content(content)
    except RewardParseError as exc:
        value, content_error = None, exc
    if value is not None:
        return value
    if content_error is not None and isinstance(content, str) and _REWARD_KEY.search(content):
        raise content_error  # the content names a reward but it is unreadable: no fallback
    value = _from_logprobs(choice.get("logprobs"))
    if value is not None:
        return value
    if content_error is not None:
        raise content_error
    raise RewardParseError("the response holds neither a 'reward:<float>' content nor a 'reward' logprob")


# ----------------------------------------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------------------------------------


def cache_key(model: str, messages: Sequence[dict[str, Any]]) -> str:
    payload = json.dumps({"model": model, "messages": list(messages)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class ScoreCache:
    """Append-only JSONL of ``{"key", "model", "score"}``; each score is flushed and fsynced as it arrives.

    A run killed mid-write leaves at most one partial last line, which is skipped on load (and the next append
    starts on a fresh line). Only successful scores are cached, so failed items are retried on the next run.
    """

    def __init__(self, path: str | os.PathLike[str] | None):
        self.path = Path(path) if path else None
        self._scores: dict[str, float] = {}
        self._lock = threading.Lock()
        if self.path is None or not self.path.is_file():
            return
        skipped = 0
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                    self._scores[row["key"]] = float(row["score"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    skipped += 1
        if skipped:
            logger.warning(
                "reward cache %s: skipped %d unreadable line(s) (an interrupted write)", self.path, skipped
            )

    def __len__(self) -> int:
        return len(self._scores)

    def get(self, key: str) -> float | None:
        return self._scores.get(key)

    def put(self, key: str, model: str, score: float) -> None:
        with self._lock:
            self._scores[key] = score
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a+b") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell() > 0:
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":  # a killed run's partial line: start a fresh one
                        handle.write(b"\n")
                line = json.dumps({"key": key, "model": model, "score": score}) + "\n"
                handle.write(line.encode())
                handle.flush()
                os.fsync(handle.fileno())


# ----------------------------------------------------------------------------------------------------------
# Client
# ----------------------------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """The URL without user:password, query string and fragment (any could hold a credential).

    Something that does not parse as ``scheme://host/...`` is shown as its scheme only.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # e.g. a non-numeric port
        return "(unparseable URL)"
    if not host:
        return f"{parts.scheme}:(no host)" if parts.scheme else "(no scheme, no host)"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if port:
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass
class ScoreResult:
    score: float | None
    cached: bool = False
    attempts: int = 0
    error: str | None = None


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    scored: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "cache_hits": self.cache_hits,
            "scored": self.scored,
            "failed": self.failed,
            "errors": dict(self.errors),
        }


RETRYABLE_STATUS = {408, 409, 429}


class RewardClient:
    """Scores conversations through an OpenAI-compatible reward endpoint; thread-safe (one per run).

    ``max_retries`` counts retries after the first attempt; the wait before retry i is
    ``min(backoff_max_s, backoff_s * 2**i)`` with +-25% jitter, or the server's ``Retry-After`` when it is
    shorter than ``backoff_max_s``. An unparseable body is not a transient fault: it is retried at most
    ``max_parse_retries`` times (1), within ``max_retries``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        cache_path: str | os.PathLike[str] | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        max_parse_retries: int = 1,
    ):
        from openai import OpenAI

        if max_retries < 0 or max_parse_retries < 0:
            raise ValueError(
                f"max_retries and max_parse_retries must be >= 0, got {max_retries}, {max_parse_retries}"
            )
        self.base_url = base_url
        self.model = model
        self.max_retries = max_retries
        self.max_parse_retries = max_parse_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.cache = ScoreCache(cache_path)
        self.stats = ClientStats()
        # Retries are ours (counted, with our backoff); the library's own would hide them.
        self._client = OpenAI(
            base_url=base_url, api_key=api_key or "not-needed", max_retries=0, timeout=timeout_s
        )

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        delay = min(self.backoff_max_s, self.backoff_s * (2**attempt)) * (1 - 0.25 * random.random())
        if retry_after is not None and 0 <= retry_after <= self.backoff_max_s:
            delay = retry_after
        time.sleep(delay)

    def score(self, messages: Messages) -> ScoreResult:
        import openai

        key = cache_key(self.model, messages)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.add("cache_hits")
            return ScoreResult(score=cached, cached=True)
        last_error = "no attempt made"
        parse_failures = 0
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.add("retries")
            self.stats.add("requests")
            retry_after = None
            try:
                response = self._client.chat.completions.create(model=self.model, messages=messages)
                value = parse_reward(response)
            except RewardParseError as exc:
                kind, last_error = "unparseable", f"unparseable response: {exc}"
            except openai.APITimeoutError:
                kind, last_error = "timeout", "request timed out"
            except openai.APIConnectionError as exc:
                kind, last_error = "connection", f"connection error: {exc.__cause__ or exc}"
            except openai.APIStatusError as exc:
                status = exc.status_code
                detail = str(exc.message)[:300]
                if status in (401, 403):
                    raise RewardEndpointError(
                        f"the reward endpoint {redact_url(self.base_url)} refused the API key ({status}): "
                        f"{detail}. Set the key's environment variable (see --api_key_env)."
                    ) from None
                if status == 404:
                    raise RewardEndpointError(
                        f"the reward endpoint {redact_url(self.base_url)} answered 404 for model "
                        f"{self.model!r}: {detail}. Check --reward_model and the base URL (it should end in /v1)."
                    ) from None
                kind, last_error = f"http_{status}", f"HTTP {status}: {detail}"
                if status not in RETRYABLE_STATUS and status < 500:
                    self.stats.error(kind)
                    break  # 400/413/422: the same request would fail again
                header = exc.response.headers.get("retry-after")
                try:
                    retry_after = float(header) if header is not None else None
                except ValueError:
                    retry_after = None
            else:
                self.cache.put(key, self.model, value)
                self.stats.add("scored")
                return ScoreResult(score=value, attempts=attempt + 1)
            self.stats.error(kind)
            if kind == "unparseable":
                parse_failures += 1
                if parse_failures > self.max_parse_retries:
                    break  # the same answer again is the likely outcome: fail the item
            if attempt < self.max_retries:
                logger.debug(
                    "reward request failed (%s), retry %d/%d", last_error, attempt + 1, self.max_retries
                )
                self._sleep(attempt, retry_after)
        self.stats.add("failed")
        return ScoreResult(score=None, attempts=attempt + 1, error=last_error)

    def list_models(self) -> list[dict[str, Any]]:
        """``/v1/models`` entries (id, and ``max_model_len`` where the server says it); [] if unsupported."""
        import openai

        try:
            page = self._client.models.list()
        except openai.APIConnectionError as exc:
            raise RewardEndpointError(
                f"no reward endpoint answers at {redact_url(self.base_url)} ({exc.__cause__ or exc}). "
                f"Start the local one with `make serve-reward RM=...` (another terminal), or pass "
                f"--serve_rm PATH to start it inside this run."
            ) from None
        except openai.APIStatusError as exc:
            if exc.status_code in (401, 403):
                raise RewardEndpointError(
                    f"the reward endpoint {redact_url(self.base_url)} refused the API key "
                    f"({exc.status_code}); set the key's environment variable (see --api_key_env)."
                ) from None
            return []
        return [m.model_dump() if hasattr(m, "model_dump") else dict(m) for m in page.data]

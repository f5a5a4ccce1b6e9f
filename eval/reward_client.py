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
``reward:abc``: an error even when a logprob is present), text after the number, a content longer than
``MAX_CONTENT_CHARS``, a body that is not JSON (also when it comes with a JSON content type) or is longer than
``MAX_REPLY_BYTES``. The parse is linear in the content's length.

`RewardClient` adds what a long evaluation needs: an on-disk cache keyed by (endpoint model, messages) so a
re-run or a resumed run never pays for a score twice, a total deadline per request (``timeout_s``: a server that
trickles its answer cannot hold an item), retries with exponential backoff (and ``Retry-After``) on 429,
408/409, 5xx, timeouts and dropped connections (an unparseable body is retried once only: it is rarely
transient), and a fatal stop on a refused key (401/403) or an unknown model (404) instead of failing every item
one by one. Deadline, retries and redaction are `rewards.api_retry`'s. The API key is passed in by the caller,
never logged or written, and scrubbed from every error (an endpoint may echo it back); `RewardClient.redact`
scrubs it from anything else a caller writes. `RewardClient.score_many` scores a batch concurrently (the path the
win rate and the judge probes share); `pick_auto_reward_model` resolves ``--reward_model auto``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from rewards.api_retry import (
    CallFailed,
    EndpointRefused,
    RetryPolicy,
    call_with_deadline,
    call_with_retries,
    openai_client,
    redact,
)

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]
T = TypeVar("T")

# Untrusted answers are bounded: Nemotron's content is ``reward:<float>`` (or a few ``name:value`` pairs).
MAX_CONTENT_CHARS = 10_000
MAX_REPLY_BYTES = 1_000_000
# A name of a ``name:value`` pair; a fullmatch without nested or overlapping repeats runs in linear time.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\- ]*")
# A plain ASCII decimal: no "_" separators, no non-ASCII digits (float() would accept both), nothing around it.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


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


def _names_reward(content: str) -> bool:
    """Does the content name a ``reward`` key at all (then it must parse; no logprobs fallback)?"""
    return any(
        sep and name.strip().lower() == "reward"
        for name, sep, _ in (part.partition(":") for part in content.split(","))
    )


def _from_content(content: Any) -> float | None:
    """The ``reward`` value of a ``name:value[,name:value...]`` content; None when there is no content."""
    if content is None or (isinstance(content, str) and not content.strip()):
        return None
    if not isinstance(content, str):
        raise RewardParseError(
            f"message content is {type(content).__name__}, expected a 'reward:<float>' string"
        )
    if len(content) > MAX_CONTENT_CHARS:
        raise RewardParseError(
            f"message content is {len(content)} characters long (at most {MAX_CONTENT_CHARS}), "
            f"expected 'reward:<float>': {content[:80]!r}"
        )
    pairs: dict[str, str] = {}
    for part in content.split(","):
        name, sep, value = part.partition(":")  # the first colon ends the name, as in 'name:value'
        name, value = name.strip(), value.strip()
        if not sep or not value or not _NAME.fullmatch(name):
            raise RewardParseError(f"message content is not 'reward:<float>': {content[:120]!r}")
        name = name.lower()
        if name in pairs:
            raise RewardParseError(f"message content gives the key {name!r} twice: {content[:120]!r}")
        pairs[name] = value
    if "reward" not in pairs:
        raise RewardParseError(
            f"message content has no 'reward' value (keys: {sorted(pairs)[:10]}); this parser reads the "
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
    if content_error is not None and isinstance(content, str):
        if len(content) > MAX_CONTENT_CHARS or _names_reward(content):
            raise content_error  # the content names a reward (or is oversized) but is unreadable: no fallback
    value = _from_logprobs(choice.get("logprobs"))
    if value is not None:
        return value
    if content_error is not None:
        raise content_error
    raise RewardParseError("the response holds neither a 'reward:<float>' content nor a 'reward' logprob")


def decode_reply(body: bytes) -> Any:
    """The JSON of a 200 answer's body; `RewardParseError` for an empty, non-JSON or too deeply nested body (a
    JSON content type proves nothing)."""
    if not body.strip():
        raise RewardParseError("the endpoint answered 200 with an empty body")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        text = body[:120].decode(errors="replace")
        raise RewardParseError(f"the endpoint answered with a non-JSON body: {text!r}") from None


def _read_capped(chunks: Any, limit: int = MAX_REPLY_BYTES) -> bytes:
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise RewardParseError(f"the endpoint's answer is longer than {limit} bytes")
    return bytes(body)


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

    def since(self, before: dict[str, Any]) -> dict[str, Any]:
        """The counts added after ``before`` (an earlier `to_dict`): one phase's requests when a client serves
        several (the judge probes, then the win-rate items)."""
        now = self.to_dict()
        out: dict[str, Any] = {k: now[k] - before.get(k, 0) for k in now if k != "errors"}
        errors = {k: v - before.get("errors", {}).get(k, 0) for k, v in now["errors"].items()}
        out["errors"] = {k: v for k, v in errors.items() if v}
        return out


class RewardClient:
    """Scores conversations through an OpenAI-compatible reward endpoint; thread-safe (one per run).

    ``timeout_s`` is each request's total deadline. ``max_retries`` counts retries after the first attempt; the
    wait before retry i is ``backoff_s * 2**i`` with jitter, capped at ``backoff_max_s`` (a longer
    ``Retry-After`` is honoured up to the cap). An unparseable body is not a transient fault: it is retried at
    most ``max_parse_retries`` times (1), within ``max_retries``.
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
        if max_retries < 0 or max_parse_retries < 0:
            raise ValueError(
                f"max_retries and max_parse_retries must be >= 0, got {max_retries}, {max_parse_retries}"
            )
        self.base_url = base_url
        self.model = model
        self.timeout_s = timeout_s
        self.policy = RetryPolicy(max_retries, backoff_s, backoff_max_s, max_parse_retries)
        self.cache = ScoreCache(cache_path)
        self.stats = ClientStats()
        self._api_key = api_key or None  # kept for each request's client and for redaction only

    def redact(self, value: T) -> T:
        """``value`` (a string, or a dict/list of them) with the API key scrubbed (for what a caller writes:
        this client's own errors are scrubbed of bearer tokens too)."""
        return redact(value, self._api_key, bearer=False)

    def _call(self, request: Any, what: str) -> Any:
        """``request(client)`` on a client of its own, under the total deadline (closing the client is how a
        request past it is abandoned)."""
        client = openai_client(self.base_url, self._api_key or "not-needed", self.timeout_s)
        return call_with_deadline(lambda: request(client), self.timeout_s, close=client.close, name=what)

    def _score_once(self, messages: Messages) -> float:
        def post(client: Any) -> bytes:
            create = client.chat.completions.with_streaming_response.create
            with create(model=self.model, messages=messages) as response:
                return _read_capped(response.iter_bytes())

        return parse_reward(decode_reply(self._call(post, "reward-request")))

    def _refused(self, failure: EndpointRefused) -> RewardEndpointError:
        where = redact_url(self.base_url)
        if failure.status == 404:
            return RewardEndpointError(
                f"the reward endpoint {where} answered 404 for model {self.redact(self.model)!r}: "
                f"{failure.message}. Check --reward_model and the base URL (it should end in /v1)."
            )
        return RewardEndpointError(
            f"the reward endpoint {where} refused the API key ({failure.status}): {failure.message}. "
            f"Set the key's environment variable (see --api_key_env)."
        )

    def score(self, messages: Messages) -> ScoreResult:
        """The item's score, or a failed `ScoreResult` (never an exception) unless the endpoint refuses the key
        or the model (`RewardEndpointError`: every other item would fail the same way)."""
        key = cache_key(self.model, messages)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.add("cache_hits")
            return ScoreResult(score=cached, cached=True)
        refused: EndpointRefused | None = None
        try:
            value, attempts = call_with_retries(
                lambda: self._score_once(messages),
                self.policy,
                secret=self._api_key,
                unusable=(RewardParseError,),
                on_failure=lambda failure: self.stats.error(failure.kind),
                what="reward request",
            )
        except EndpointRefused as failure:
            refused = failure
        except CallFailed as failure:
            self.stats.add("requests", failure.attempts)
            self.stats.add("retries", failure.attempts - 1)
            self.stats.add("failed")
            return ScoreResult(score=None, attempts=failure.attempts, error=failure.message)
        if refused is not None:  # raised outside the handler: no library exception rides along as context
            self.stats.add("requests")
            raise self._refused(refused)
        self.stats.add("requests", attempts)
        self.stats.add("retries", attempts - 1)
        self.cache.put(key, self.model, value)
        self.stats.add("scored")
        return ScoreResult(score=value, attempts=attempts)

    def score_many(self, conversations: Sequence[Messages], concurrency: int = 8) -> list[ScoreResult]:
        """`score` for each conversation, at most ``concurrency`` requests in flight, in order; a conversation
        given twice is asked for once."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        jobs = {cache_key(self.model, c): c for c in conversations}
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = dict(zip(jobs, pool.map(self.score, jobs.values()), strict=True))
        return [results[cache_key(self.model, c)] for c in conversations]

    def list_models(self) -> list[dict[str, Any]]:
        """``/v1/models`` entries (id, and ``max_model_len`` where the server says it); [] if unsupported."""
        import openai

        try:
            page = self._call(lambda client: client.models.list(), "reward-models")
            return [m.model_dump() if hasattr(m, "model_dump") else dict(m) for m in page.data]
        except openai.APIConnectionError as exc:
            cause = redact(str(exc.__cause__ or exc), self._api_key)[:200]
            message = (
                f"no reward endpoint answers at {redact_url(self.base_url)} ({cause}). Start the local one with "
                f"`make serve-reward RM=...` (another terminal), or pass --serve_rm PATH to start it inside this run."
            )
        except openai.APIStatusError as exc:
            if exc.status_code not in (401, 403):
                return []
            message = (
                f"the reward endpoint {redact_url(self.base_url)} refused the API key "
                f"({exc.status_code}); set the key's environment variable (see --api_key_env)."
            )
        except Exception as exc:  # noqa: BLE001 - a garbage or trickled listing is "unsupported", not a crash
            logger.warning(
                "%s/models gave no usable model list (%s)", redact_url(self.base_url), type(exc).__name__
            )
            return []
        raise RewardEndpointError(message)


def pick_auto_reward_model(models: list[dict[str, Any]], base_url: str) -> str:
    """``--reward_model auto``: the endpoint's only model. A shared endpoint lists many (NVIDIA's lists chat
    models first), and scoring with an arbitrary one would be wrong, so several is an error."""
    ids = [str(m.get("id")) for m in models if m.get("id")]
    if len(ids) == 1:
        return ids[0]
    where = f"{redact_url(base_url)}/models"
    if not ids:
        raise RewardEndpointError(
            f"--reward_model auto: {where} lists no model; pass --reward_model ID (REWARD_MODEL=ID for make)"
        )
    shown = ", ".join(ids[:5]) + (f", ... ({len(ids)} in all)" if len(ids) > 5 else "")
    raise RewardEndpointError(
        f"--reward_model auto: {where} lists {len(ids)} models ({shown}), so which one judges is ambiguous; "
        f"pass --reward_model ID (REWARD_MODEL=ID for make), e.g. nvidia/llama-3.1-nemotron-70b-reward"
    )

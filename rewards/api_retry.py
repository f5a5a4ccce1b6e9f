"""Calling an OpenAI-compatible endpoint robustly: a total deadline per request, retries with backoff, and the
API key scrubbed from every message a caller logs, raises or writes.

Used by the LLM judge (`rewards.judge`) and the win-rate reward client (`eval.reward_client`): one place decides
which failures are worth another attempt (429, 408/409, 5xx, timeouts, dropped connections, unusable answers),
which fail at once (other 4xx) and which mean the configuration is wrong (401/403/404).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Sent when the key's variable is unset: a local vLLM or llama.cpp server without --api-key accepts any key.
NO_KEY = "EMPTY"
MAX_ANSWER_CHARS = 1_000_000  # an answer beyond this is not parsed (untrusted output)

TRANSIENT_STATUS = frozenset({408, 409, 429})  # plus every 5xx
# A wrong key, model or URL: every request would fail the same way.
REFUSED_STATUS = frozenset({401, 403, 404})
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")


def redact(value: T, secret: str | None, *, bearer: bool = True) -> T:
    """``value`` with ``secret`` replaced by ``***`` in every string, also inside dicts, lists and tuples; with
    ``bearer``, any ``Bearer <token>`` too (for error messages: ordinary text may say "bearer"). A secret shorter
    than 4 characters is not searched for (it would mangle ordinary text)."""
    if isinstance(value, str):
        if bearer:
            value = _BEARER.sub(r"\1***", value)  # type: ignore[assignment]
        while secret and len(secret) >= 4 and secret in value:  # repeated: a replacement can form a new one
            value = value.replace(secret, "***")  # type: ignore[assignment]
        return value
    if isinstance(value, (dict, list, tuple)):

        def inner(item: Any) -> Any:
            return redact(item, secret, bearer=bearer)

        if isinstance(value, dict):
            return {inner(k): inner(v) for k, v in value.items()}  # type: ignore[return-value]
        return type(value)(inner(v) for v in value)  # type: ignore[return-value]
    return value


@functools.cache
def _ssl_context() -> Any:
    # Building a context loads the CA store (tens of ms); one per request would dominate a local endpoint's
    # latency. The HTTP library's own default context, built once and shared (contexts are thread-safe).
    try:
        import httpx2 as httpx  # what openai >= 2 uses
    except ImportError:
        import httpx
    return httpx.create_ssl_context()


def api_key_from_env(env_name: str) -> str:
    """The key in the environment variable ``env_name``, or `NO_KEY` when it is unset or empty."""
    return os.environ.get(env_name) or NO_KEY


def answer_json(content: Any, *, what: str, error: type[Exception]) -> Any:
    """The outermost ``{...}`` of an endpoint's answer, parsed (```json fences and prose around it tolerated);
    ``error`` with a message that starts with ``what`` when there is none to parse."""
    if not isinstance(content, str) or not content.strip():
        raise error(f"{what} is empty")
    if len(content) > MAX_ANSWER_CHARS:
        raise error(f"{what} is longer than {MAX_ANSWER_CHARS} characters")
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end <= start:
        raise error(f"{what} holds no JSON object")
    try:
        return json.loads(content[start : end + 1])
    except (json.JSONDecodeError, RecursionError):
        raise error(f"{what} is not valid JSON") from None


def openai_client(base_url: str, api_key: str, timeout_s: float) -> Any:
    """A client for ONE request (closing it abandons that request only), without the library's own retries
    (ours are counted and logged) and with the SDK's HTTP defaults."""
    import openai

    http_client = openai.DefaultHttpxClient(verify=_ssl_context(), timeout=timeout_s)
    return openai.OpenAI(
        base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0, http_client=http_client
    )


class DeadlineExceeded(TimeoutError):
    """No complete answer within the request's total deadline."""


def call_with_deadline(
    call: Callable[[], T], deadline_s: float, *, close: Callable[[], None], name: str = "api-request"
) -> T:
    """``call()`` with a total deadline; ``close`` (the request's own client) is called in every case.

    An HTTP client's timeout bounds each connect or read, not the whole request: a server that sends a byte now
    and then never trips it. So the call runs in a daemon thread and is abandoned after ``deadline_s``; closing
    its client ends the worker's next read.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as err:  # noqa: BLE001 - re-raised in the calling thread
            outcome["error"] = err

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join(deadline_s)
    try:
        close()
    except Exception:  # noqa: BLE001 - closing is best effort
        pass
    if worker.is_alive():
        raise DeadlineExceeded(f"no complete answer within the {deadline_s:g} s deadline")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def backoff_delay(attempt: int, backoff_s: float, backoff_max_s: float, retry_after: Any = None) -> float:
    """Wait before retry ``attempt + 1``: ``backoff_s * 2**attempt`` with jitter, capped at ``backoff_max_s``; a
    ``Retry-After`` (seconds) lengthens it, never past the cap (a hostile header cannot stall the run)."""
    delay = min(backoff_max_s, backoff_s * (2**attempt)) * random.uniform(0.5, 1.0)
    try:
        wait = float(retry_after) if retry_after is not None else None
    except (TypeError, ValueError):
        wait = None
    if wait is not None and wait == wait:  # not NaN
        delay = max(delay, min(backoff_max_s, wait))
    return delay


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` counts retries after the first attempt. An unusable answer (one of the caller's
    ``unusable`` exceptions) is rarely transient: it is retried at most ``max_unusable_retries`` times (None:
    as often as any other failure)."""

    max_retries: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    max_unusable_retries: int | None = None

    def __post_init__(self) -> None:
        if self.max_retries < 0 or (self.max_unusable_retries is not None and self.max_unusable_retries < 0):
            raise ValueError(
                f"max_retries and max_unusable_retries must be >= 0, got {self.max_retries}, "
                f"{self.max_unusable_retries}"
            )


class CallFailed(Exception):
    """The call failed for good. ``kind`` names the last failure (``timeout``, ``connection``, ``http_<status>``,
    ``unparseable``, ``error``); ``message`` is one redacted line; ``attempts`` counts the requests made."""

    def __init__(self, kind: str, message: str, attempts: int, status: int | None = None, name: str = ""):
        super().__init__(message)
        self.kind, self.message, self.attempts, self.status = kind, message, attempts, status
        self.name = name  # the failure's exception type, e.g. NotFoundError


class EndpointRefused(CallFailed):
    """401, 403 or 404: the key, model or URL is wrong, so retrying (or the next item) cannot help."""


def classify(exc: BaseException, unusable: tuple[type[BaseException], ...], secret: str | None) -> CallFailed:
    """One failed attempt as a `CallFailed` (attempts 0) with a redacted, length-capped message."""
    import openai

    name = type(exc).__name__
    detail = redact(" ".join(str(exc).split()), secret)[:300]
    if isinstance(exc, unusable):
        return CallFailed("unparseable", f"unparseable answer: {detail}", 0, name=name)
    if isinstance(exc, (openai.APITimeoutError, DeadlineExceeded)):
        return CallFailed("timeout", f"timed out ({name}: {detail})", 0, name=name)
    if isinstance(exc, openai.APIConnectionError):
        cause = redact(" ".join(str(exc.__cause__ or "").split()), secret)[:200]
        return CallFailed(
            "connection", f"connection error ({name}: {detail}{'; ' + cause if cause else ''})", 0
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        failure_type = EndpointRefused if status in REFUSED_STATUS else CallFailed
        return failure_type(
            f"http_{status}", f"HTTP {status} ({name}): {detail}", 0, status=status, name=name
        )
    return CallFailed("error", f"{name}: {detail}", 0, name=name)


def _retry_after(exc: BaseException) -> Any:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return headers.get("retry-after") if headers is not None else None


def call_with_retries(
    attempt_once: Callable[[], T],
    policy: RetryPolicy,
    *,
    secret: str | None = None,
    unusable: tuple[type[BaseException], ...] = (),
    on_failure: Callable[[CallFailed], None] | None = None,
    what: str = "request",
) -> tuple[T, int]:
    """``(value, attempts)`` of the first attempt that succeeds.

    Raises `EndpointRefused` at once on 401/403/404, and `CallFailed` (the last failure) when a 4xx other than
    408/409/429 answers, when ``policy.max_unusable_retries`` unusable answers are exceeded, or when the retries
    are spent. ``on_failure`` sees every failed attempt (for counters). No message holds ``secret``, and no
    raised error carries the library's exception (whose text may echo the key) as its context.
    """
    unusable_count = 0
    failure: CallFailed | None = None
    for attempt in range(policy.max_retries + 1):
        retry_after = None
        try:
            return attempt_once(), attempt + 1
        except Exception as exc:  # noqa: BLE001 - every failure is classified; none may crash the caller's run
            failure = classify(exc, unusable, secret)
            retry_after = _retry_after(exc)
        failure.attempts = attempt + 1
        if on_failure is not None:
            on_failure(failure)
        if isinstance(failure, EndpointRefused):
            raise failure
        status = failure.status
        if status is not None and status < 500 and status not in TRANSIENT_STATUS:
            break  # 400/413/422: the same request would fail again
        if failure.kind == "unparseable":
            unusable_count += 1
            if policy.max_unusable_retries is not None and unusable_count > policy.max_unusable_retries:
                break  # the same answer again is the likely outcome
        if attempt < policy.max_retries:
            logger.debug(
                "%s failed (%s), retry %d/%d", what, failure.message, attempt + 1, policy.max_retries
            )
            time.sleep(backoff_delay(attempt, policy.backoff_s, policy.backoff_max_s, retry_after))
    assert failure is not None
    raise failure

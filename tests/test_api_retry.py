"""The shared deadline/retry/redaction helper for OpenAI-compatible calls (`rewards.api_retry`): hand-computed
cases and property-based fuzzing. The judge's and the reward client's server tests exercise it over HTTP."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.api_retry import (
    CallFailed,
    DeadlineExceeded,
    RetryPolicy,
    backoff_delay,
    call_with_deadline,
    call_with_retries,
    redact,
)

SECRET = "sk-abc123-secret"


def test_redact_hand_computed():
    assert redact(f"key {SECRET} in Bearer {SECRET}", SECRET) == "key *** in Bearer ***"
    assert redact("Authorization: bearer abc.def", None) == "Authorization: bearer ***"  # any bearer token
    nested = {"error": [f"x{SECRET}y", (SECRET, 3)], f"k-{SECRET}": None, "n": 1.5}
    assert redact(nested, SECRET) == {"error": ["x***y", ("***", 3)], "k-***": None, "n": 1.5}
    assert redact("abc is fine", "abc") == "abc is fine"  # under 4 characters: not searched for
    assert redact("****", "****") == "***" and redact("*****", "****") == "***"  # no secret re-formed
    # For what a run writes (responses may say "bearer"), only the secret itself goes.
    assert redact(f"the bearer of {SECRET}", SECRET, bearer=False) == "the bearer of ***"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(min_size=4, max_size=12), st.text(max_size=40))
def test_redact_leaves_no_secret(before, secret, after):
    text = before + secret + after + secret
    out = redact({"a": [text]}, secret)["a"][0]
    assert secret not in out and "***" in out


@pytest.mark.parametrize(
    "attempt, retry_after, low, high",
    [
        (0, None, 0.5, 1.0),  # backoff_s with jitter in [0.5, 1]
        (2, None, 2.0, 4.0),  # doubled twice
        (10, None, 5.0, 10.0),  # capped at backoff_max_s
        (0, "3", 3.0, 3.0),  # Retry-After lengthens the wait
        (0, "1e9", 10.0, 10.0),  # ... never past the cap
        (0, "0", 0.5, 1.0),  # ... never shortens it
        (0, "nan", 0.5, 1.0),  # unreadable headers are ignored
        (0, "soon", 0.5, 1.0),
        (0, "-5", 0.5, 1.0),
    ],
)
def test_backoff_delay(attempt, retry_after, low, high):
    delay = backoff_delay(attempt, 1.0, 10.0, retry_after)
    assert low <= delay <= high


class Flaky:
    """Raises the given exceptions in turn, then returns "ok"."""

    def __init__(self, *errors):
        self.errors, self.calls = list(errors), 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Unusable(ValueError):
    pass


FAST = RetryPolicy(max_retries=3, backoff_s=0.0, backoff_max_s=0.0)


def test_call_with_retries_succeeds_after_failures_and_reports_each():
    seen = []
    flaky = Flaky(RuntimeError("a"), Unusable("b"))
    assert call_with_retries(flaky, FAST, unusable=(Unusable,), on_failure=seen.append) == ("ok", 3)
    assert [(f.kind, f.attempts) for f in seen] == [("error", 1), ("unparseable", 2)]


def test_unusable_answers_are_retried_at_most_max_unusable_retries():
    flaky = Flaky(*[Unusable(f"bad {SECRET}") for _ in range(5)])
    policy = RetryPolicy(max_retries=5, backoff_s=0.0, backoff_max_s=0.0, max_unusable_retries=1)
    with pytest.raises(CallFailed) as info:
        call_with_retries(flaky, policy, secret=SECRET, unusable=(Unusable,))
    assert flaky.calls == 2 and info.value.attempts == 2 and info.value.kind == "unparseable"
    assert info.value.message == "unparseable answer: bad ***" and info.value.__context__ is None


def test_retries_spent_raise_the_last_failure():
    flaky = Flaky(*[TimeoutError("slow") for _ in range(10)])
    with pytest.raises(CallFailed) as info:
        call_with_retries(flaky, FAST)
    assert flaky.calls == 4 and info.value.attempts == 4 and "TimeoutError: slow" in info.value.message
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)


def test_deadline_abandons_a_call_and_closes_its_client():
    release, closed = threading.Event(), []
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        call_with_deadline(lambda: release.wait(30), 0.5, close=lambda: closed.append(1))
    assert time.monotonic() - started < 10 and closed == [1]  # 0.5 s, generously; not the 30 s
    release.set()
    assert call_with_deadline(lambda: 7, 10, close=lambda: closed.append(2)) == 7 and closed == [1, 2]
    with pytest.raises(KeyError):  # the call's own error reaches the caller
        call_with_deadline(lambda: {}["x"], 10, close=lambda: None)

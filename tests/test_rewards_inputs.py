"""Every registered reward, called the way TRL calls it: one float per completion for any batch size, and a
short TypeError naming the argument (and what it got) when a batch is not a list.

The rewards are built through `build_reward_funcs` with real backends: a tiny reward model on disk and an
OpenAI-compatible judge on 127.0.0.1 that scores every response 0.5.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import threading
import traceback
from collections.abc import Iterator
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rewards.config import SETTINGS_PREFIXES, RewardArguments
from rewards.countdown import countdown_reward
from rewards.registry import REWARDS, build_reward_funcs, needs_settings, reward_names

# The list arguments each reward reads (TRL passes all of them as keywords, one entry per completion).
LIST_ARGUMENTS = {
    "countdown": ("completions", "target", "nums"),
    "countdown_strict": ("completions", "target", "nums"),
    "format": ("completions",),
    "answer_format": ("completions",),
    "tag_count": ("completions",),
    "overlong": ("completions", "completion_ids"),
    "reward_model": ("prompts", "completions"),
    "llm_judge": ("prompts", "completions"),
    "length_window": ("completions", "source"),
    "patterns": ("completions",),
    "math": ("completions", "answer"),
    "code_summary": ("completions", "reference"),
}
NOT_LISTS = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.integers(),
    st.floats(allow_nan=True),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    st.frozensets(st.integers(), max_size=3),
)


class _Judge(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ids = re.findall(r'<response id="(r\d+)">', body["messages"][1]["content"])
        content = json.dumps({"scores": [{"id": i, "explanation": "ok", "score": 0.5} for i in ids]})
        answer = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture(scope="module")
def judge_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer LlamaForSequenceClassification (num_labels=1) with the embedded tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from posttrain.models import load_tokenizer

    path = tmp_path_factory.mktemp("tiny-rm")
    tokenizer = load_tokenizer("embedded")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def built(judge_url: str, tiny_rm: Path) -> dict[str, Any]:
    """Every registered reward by name, built the way the RL recipes build them."""
    args = RewardArguments(
        reward_funcs=reward_names(),
        overlong_max_length=32,
        overlong_buffer_length=8,
        reward_model_path=str(tiny_rm),
        reward_model_max_length=64,
        judge_base_url=judge_url,
        judge_model="m",
        judge_max_retries=0,
        judge_timeout_s=30,
        length_min_ratio=0.5,
        length_max_words=20,
        patterns_required=[r"\d"],
        patterns_forbidden=["(?i)bogus"],
    )
    funcs = build_reward_funcs(args)
    assert set(LIST_ARGUMENTS) == set(reward_names()), "a new reward: list the arguments it reads above"
    return dict(zip(args.reward_funcs, funcs, strict=True))


def _batch(n: int, texts: list[str]) -> dict[str, Any]:
    """A TRL-style keyword batch of ``n`` rows (Countdown columns, prompts, token ids)."""
    return {
        "prompts": [f"Use [1, 2] to make 3. Task {i % 2}" for i in range(n)],
        "completions": texts[:n],
        "completion_ids": [[7] * (len(t) // 2) for t in texts[:n]],
        "target": [3] * n,
        "nums": [[1, 2]] * n,
        "source": [f"Rewrite this text number {i}" for i in range(n)],
        "answer": ["3"] * n,
        "reference": ["Return the sum of two numbers."] * n,
    }


COMPLETION = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["<think>1+2</think><answer>1 + 2</answer>", "<answer>2 - 1</answer>", ""]),
)


def test_every_configurable_factory_takes_exactly_its_settings() -> None:
    """A new ``judge_*`` (etc.) field that the factory does not take fails here, not at the start of a run."""
    args = RewardArguments()
    for name in reward_names():
        settings_ = args.reward_settings(name, max_completion_length=64)
        if not needs_settings(name):
            assert settings_ == {}
            continue
        signature = inspect.signature(REWARDS[name])
        signature.bind(**settings_)  # TypeError names an unexpected keyword
        prefix = SETTINGS_PREFIXES[name]
        assert set(settings_) == {
            f.name.removeprefix(prefix) for f in fields(args) if f.name.startswith(prefix)
        }
    assert set(SETTINGS_PREFIXES) == {n for n in reward_names() if needs_settings(n)}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(COMPLETION, min_size=6, max_size=6), n=st.integers(0, 6))
def test_one_score_per_completion_for_any_batch_size(built: dict[str, Any], texts: list[str], n: int) -> None:
    batch = _batch(n, texts)
    for name, func in built.items():
        scores = func(**batch)
        assert isinstance(scores, list) and len(scores) == n, name
        assert all(isinstance(s, float) and math.isfinite(s) for s in scores), (name, scores)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), bad=NOT_LISTS)
def test_a_batch_that_is_not_a_list_is_a_short_clear_error(
    built: dict[str, Any], data: Any, bad: Any
) -> None:
    name = data.draw(st.sampled_from(sorted(built)), label="reward")
    argument = data.draw(st.sampled_from(LIST_ARGUMENTS[name]), label="argument")
    assume(
        not (argument in ("completion_ids", "source", "answer", "reference") and bad is None)
    )  # optional: None means "not given"
    batch = {**_batch(2, ["<answer>1 + 2</answer>", "no answer"]), argument: bad}
    with pytest.raises((TypeError, ValueError)) as info:
        built[name](**batch)
    message = str(info.value)
    assert argument in message and type(bad).__name__ in message, message
    # raised where the reward checks its arguments, not deep inside it (test frame, reward, a helper or two)
    assert len(traceback.extract_tb(info.tb)) <= 4, traceback.format_tb(info.tb)


def test_countdown_reward_none_names_completions() -> None:
    """Issue 9 item 13: this was ``TypeError: object of type 'NoneType' has no len()`` from deep inside."""
    with pytest.raises(TypeError, match=r"countdown reward: completions must be a list .* got NoneType"):
        countdown_reward(None, target=[3], nums=[[1, 2]])
    with pytest.raises(TypeError, match=r"countdown reward: target must be a list .* got int"):
        countdown_reward(["<answer>1+2</answer>"], target=3, nums=[[1, 2]])
    # a single string is not a batch of one: it used to be scored character by character
    from rewards.format import format_reward

    with pytest.raises(TypeError, match="format reward: completions must be a list .* got str"):
        format_reward("<think>a</think><answer>b</answer>")
    assert countdown_reward(("<answer>1+2</answer>",), target=(3,), nums=([1, 2],)) == [
        1.0
    ]  # tuples are fine

"""Format shaping rewards and the reward registry."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rewards
from rewards.format import answer_format_reward, format_reward, tag_count_reward
from rewards.registry import REWARDS, get_reward_funcs, needs_settings, register_reward

GOOD = "<think>\n44 + 35 = 79, 79 + 19 = 98\n</think>\n<answer> (44 + 35) + 19 </answer>"


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        "<think>x</think><answer>1</answer>",
        "Let me solve this step by step.\n<think>x</think>\n\n<answer>\n1 + 2\n</answer>\n",
    ],
)
def test_format_ok(text: str) -> None:
    assert format_reward([text]) == [1.0]
    assert format_reward([[{"role": "assistant", "content": text}]]) == [1.0]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "(44 + 35) + 19",
        "<answer>1</answer>",  # no think
        "<think></think> <answer>1</answer>",  # empty think: the answer-only format with two extra tags
        "<think> \n </think>\n<answer>1</answer>",  # whitespace-only think
        "<think>x</think>",  # no answer
        "<answer>1</answer><think>x</think>",  # wrong order
        "<think>x</think> and now <answer>1</answer>",  # text between blocks
        "<think>x</think><answer>1</answer> trailing words",
        "<think>x</think><answer>  </answer>",  # empty answer
        "<think>x<answer>1</answer></think>",  # answer inside think
        "<think>x</think><answer>1</answer><answer>2</answer>",  # duplicate tags
        "<think>a</think><think>b</think><answer>1</answer>",
        "<think>x</think><answer>1",  # unclosed
    ],
)
def test_format_bad(text: str) -> None:
    assert format_reward([text]) == [0.0]


def test_format_prompt_seeded_think() -> None:
    completion = "Let me see, 1 + 2 = 3.</think>\n<answer>1 + 2</answer>"
    assert format_reward([completion]) == [0.0]
    base_prompt = "User: ... Assistant: Let me solve this step by step.\n<think>"
    assert format_reward([completion], prompts=[base_prompt]) == [1.0]
    assert tag_count_reward([completion], prompts=[base_prompt]) == [1.0]
    # a completion that re-opens <think> after a seeded prompt has two of them
    assert format_reward(["<think>" + completion], prompts=[base_prompt]) == [0.0]
    chat_prompt = [{"role": "user", "content": "Show your work in <think> </think> tags."}]
    assert format_reward([completion], prompts=[chat_prompt]) == [0.0]


@pytest.mark.parametrize(
    "text",
    [
        "<answer>1 + 2</answer>",
        "  \n<answer>\n(3 * 4) - 2\n</answer>\n",
    ],
)
def test_answer_format_ok(text: str) -> None:
    assert answer_format_reward([text]) == [1.0]
    assert answer_format_reward([[{"role": "assistant", "content": text}]]) == [1.0]
    assert format_reward([text]) == [0.0]  # the think format does not reward a direct answer


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1 + 2",
        "<answer></answer>",
        "<answer> \n </answer>",  # empty
        "So: <answer>1</answer>",  # text before
        "<answer>1</answer> done",  # text after
        "<answer>1</answer><answer>2</answer>",  # two spans
        "<answer>1</answer>\n<answer>2</answer>",
        "<think>x</think><answer>1</answer>",  # a think block is not a direct answer
        "<answer><think>x</think>1</answer>",
        "<answer>1",  # unclosed
        "1</answer>",
        "<answer>1<answer>2</answer>",
        "</answer>1<answer>",
    ],
)
def test_answer_format_bad(text: str) -> None:
    assert answer_format_reward([text]) == [0.0]


def test_answer_format_seeded_think_and_garbage() -> None:
    # After a prompt that pre-seeds <think> ("base" template), a direct answer closes it first.
    base_prompt = "User: ... Assistant: Let me solve this step by step.\n<think>"
    closed = "\n</think>\n<answer>1 + 2</answer>"
    assert answer_format_reward([closed], prompts=[base_prompt]) == [1.0]
    assert answer_format_reward([closed]) == [0.0]
    assert answer_format_reward(["x</think><answer>1</answer>"], prompts=[base_prompt]) == [0.0]
    assert answer_format_reward([None, 1, {"content": None}, [None]]) == [0.0] * 4
    assert answer_format_reward(["<answer>1</answer>"], prompts="not a list") == [1.0]
    assert answer_format_reward.__name__ == "answer_format_reward"
    assert get_reward_funcs(["answer_format"]) == [answer_format_reward]


def test_tag_count() -> None:
    assert tag_count_reward([GOOD]) == [1.0]
    assert tag_count_reward(["<think>x</think>"]) == [0.5]
    assert tag_count_reward(["<think>x</think><answer>1"]) == [0.75]
    assert tag_count_reward(["<answer>1</answer><answer>2</answer>"]) == [0.0]
    assert tag_count_reward([None, 3, ""]) == [0.0, 0.0, 0.0]
    assert tag_count_reward.__name__ == "tag_count_reward"
    assert format_reward.__name__ == "format_reward"


def test_format_never_raises_on_garbage() -> None:
    assert format_reward([None, 1, {"content": None}, [None, {"role": "assistant"}]]) == [0.0] * 4
    assert format_reward(["x"], prompts="not a list") == [0.0]


@pytest.mark.parametrize(
    "text",
    [
        "<think>" * (1 << 17) + "</answer>" * (1 << 17),
        "<think>" + "a" * (1 << 20) + "</think><answer>1</answer>",
        "<" * (1 << 20),
    ],
)
def test_format_bounded_time(text: str) -> None:
    start = time.perf_counter()
    format_reward([text])
    tag_count_reward([text])
    answer_format_reward([text])
    answer_format_reward(["<answer>" + text + "</answer>"])
    assert time.perf_counter() - start < 0.5


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.one_of(
            st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "1+2"]),
            st.text(max_size=6),
        ),
        max_size=20,
    )
)
def test_format_levels_property(parts: list[str]) -> None:
    text = "".join(parts)
    fmt = format_reward([text])[0]
    tags = tag_count_reward([text])[0]
    direct = answer_format_reward([text])[0]
    assert fmt in {0.0, 1.0} and direct in {0.0, 1.0}
    assert tags in {0.0, 0.25, 0.5, 0.75, 1.0}
    if fmt == 1.0:
        assert tags == 1.0 and direct == 0.0
    if direct == 1.0:
        assert tags == 0.5


# ---------------------------------------------------------------- registry


def test_registry_names_and_order() -> None:
    assert {"countdown", "countdown_strict", "format", "answer_format", "tag_count"} <= set(REWARDS)
    funcs = get_reward_funcs(["format", "countdown", "tag_count", "countdown_strict"])
    assert [f.__name__ for f in funcs] == [
        "format_reward",
        "countdown_reward",
        "tag_count_reward",
        "countdown_strict_reward",
    ]
    assert get_reward_funcs("countdown, format") == [REWARDS["countdown"](), REWARDS["format"]()]
    assert get_reward_funcs([]) == []


def test_registry_unknown_name() -> None:
    with pytest.raises(ValueError) as info:
        get_reward_funcs(["countdown", "accuracy"])
    message = str(info.value)
    assert "'accuracy'" in message
    assert ", ".join(sorted(n for n in REWARDS if not needs_settings(n))) in message


def test_register_reward() -> None:
    @register_reward("_test_constant")
    def constant_reward(completions: list[object], **kwargs: object) -> list[float]:
        return [0.5] * len(completions)

    try:
        assert get_reward_funcs(["_test_constant"]) == [constant_reward]
        register_reward("_test_constant")(constant_reward)  # idempotent for the same object
        with pytest.raises(ValueError, match="already registered"):
            register_reward("_test_constant")(lambda completions, **kw: [0.0] * len(completions))
        with pytest.raises(ValueError):
            register_reward("")
    finally:
        REWARDS.pop("_test_constant", None)


def test_package_reexports() -> None:
    for name in rewards.__all__:
        assert hasattr(rewards, name)
    assert rewards.get_reward_funcs(["countdown"]) == [rewards.countdown_reward]

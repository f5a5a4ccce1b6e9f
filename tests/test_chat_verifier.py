"""The verifiable judge: hand-checked replies per family, scores, every fixture reply, and hostile input."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posttrain.chat_fixture import (
    STYLES,
    TASK_FAMILIES,
    evasive_reply,
    off_task_reply,
    render_reply,
    smoltalk_fixture_rows,
    ultrafeedback_fixture_rows,
)
from rewards.chat_verifier import (
    FAMILIES,
    JUDGE_ID,
    MAX_REPLY_CHARS,
    UnknownPromptError,
    Verdict,
    score_conversation,
    verify,
)

COUNTDOWN = "<answer>(74 - 9) + 48</answer>"
ARITH, REVERSE, UPPER = (
    "What is 74 × 6?",
    "Reverse the word 'planet'.",
    "Write 'planet river' in capital letters.",
)
COUNT, SORT = (
    "How many letters are in the word 'candle'?",
    "Sort these numbers from smallest to largest: 9, 3, 5.",
)
CAPITAL, OPPOSITE, PARITY = (
    "What is the capital of France?",
    "What is the opposite of 'hot'?",
    "Is 719 even or odd?",
)
PROMPTS = {
    "arithmetic": ARITH,
    "reverse": REVERSE,
    "uppercase": UPPER,
    "count_letters": COUNT,
    "sort_numbers": SORT,
    "capital": CAPITAL,
    "opposite": OPPOSITE,
    "parity": PARITY,
}


# ---------------------------------------------------------------- hand-checked replies


@pytest.mark.parametrize(
    ("prompt", "reply", "status"),
    [
        # arithmetic: the last number decides
        (ARITH, "74 × 6 = 444.", "correct"),
        (ARITH, "70 × 6 = 420 and 4 × 6 = 24, so 420 + 24 = 454.", "wrong"),  # the slip in the explanation
        (ARITH, "I first got 454, but checking again: 444.", "correct"),
        (ARITH, "444. Doubled, that is 888.", "wrong"),  # the last number stated is not the answer
        (ARITH, "**444**", "correct"),
        (ARITH, COUNTDOWN, "wrong"),  # numbers, so an answer of the kind: 48
        (ARITH, "I'm not sure, you could look it up.", "no_answer"),
        (ARITH, "The capital of France is Paris.", "no_answer"),  # another prompt's answer
        (ARITH, "", "no_answer"),
        ("Compute 3 - 53.", "3 - 53 = -50.", "correct"),
        ("Compute 3 - 53.", "It is 50.", "wrong"),
        ("Calculate 99 × 99, please.", "That's 9,801.", "correct"),
        ("What is 10 + 5?", "15.0", "correct"),
        ("What is 10 + 5?", "15.5", "wrong"),
        ("What is 10 + 5?", "15th", "no_answer"),  # an ordinal is not a number answer
        ("You are a helpful assistant.\n\nWhat is 2 + 2?", "4", "correct"),  # a system prompt before it
        # reverse: the last anagram of the word (not the word itself)
        (REVERSE, "'planet' spelled backwards is 'tenalp'.", "correct"),
        (REVERSE, "t-e-n-a-l-p, so: TENALP", "correct"),
        (REVERSE, "Reversed, 'planet' is 'tenlap'.", "wrong"),
        (REVERSE, "The word 'planet' reversed is planet.", "no_answer"),
        (REVERSE, "The capital of France is Paris.", "no_answer"),
        ("Reverse the word 'level'.", "level", "correct"),  # a palindrome is its own reversal
        # uppercase: the last occurrence of the phrase, fully in capitals
        (UPPER, "PLANET RIVER", "correct"),
        (UPPER, "'planet river' in capitals is PLANET RIVER.", "correct"),
        (UPPER, "PLANET RIVER, or rather: Planet River.", "wrong"),
        (UPPER, "PLANET river", "wrong"),
        (UPPER, "PLANET RIVERS", "no_answer"),
        (UPPER, COUNTDOWN, "no_answer"),
        # count_letters: the last number
        (COUNT, "'candle' has 6 letters.", "correct"),
        (COUNT, "c-a-n-d-d-l-e: 7 letters.", "wrong"),
        (COUNT, "six", "no_answer"),  # spelled-out numbers are not read
        # sort_numbers: the last list of as many numbers as the prompt gives
        (SORT, "3, 5, 9", "correct"),
        (SORT, "Sorted: 3, 5, 9. All 3 numbers are still there.", "correct"),
        (SORT, "- 3\n- 5\n- 9", "correct"),
        (SORT, "3 < 5 < 9", "correct"),
        (SORT, "3, 5 and 9", "correct"),
        (SORT, "3, 9, 5", "wrong"),
        (SORT, "Sorted: 3, 5, 9, 12", "wrong"),  # a number too many
        (SORT, "The smallest is 3 and the largest is 9.", "no_answer"),
        (SORT, COUNTDOWN, "no_answer"),
        (SORT, "Reversed, 'planet' is 'tenalp'.", "no_answer"),
        # capital: the last known capital named
        (CAPITAL, "Paris.", "correct"),
        (CAPITAL, "it's paris", "correct"),
        (CAPITAL, "Not Paris but Madrid.", "wrong"),
        (CAPITAL, "Lyon", "no_answer"),
        (CAPITAL, COUNTDOWN, "no_answer"),
        # opposite: the last word of the opposites vocabulary other than the prompt's
        (OPPOSITE, "The opposite of 'hot' is 'cold'.", "correct"),
        (OPPOSITE, "warm", "wrong"),
        (OPPOSITE, "Hot is hot.", "no_answer"),
        (OPPOSITE, "It is simply 'not hot'.", "no_answer"),
        ("What is the opposite of 'light'?", "heavy (or dark)", "correct"),
        # parity: the last even/odd
        (PARITY, "719 is odd.", "correct"),
        (PARITY, "It ends in 9, which is even, so 719 is even.", "wrong"),
        (PARITY, "Whether 719 divides by two depends on its last digit.", "no_answer"),
        (PARITY, COUNTDOWN, "no_answer"),
        (PARITY, "74 × 6 = 444.", "no_answer"),  # another prompt's answer
        ("Is 12 even or odd?", "EVEN", "correct"),
    ],
)
def test_hand_checked_replies(prompt: str, reply: str, status: str) -> None:
    verdict = verify(prompt, reply)
    assert verdict.status == status, verdict
    assert verdict.score == {"correct": 1.0, "wrong": 0.0, "no_answer": -1.0}[status]
    assert verdict.family in FAMILIES and verdict.reason


def test_every_family_has_a_hand_checked_prompt() -> None:
    assert sorted(PROMPTS) == sorted(FAMILIES)
    assert {verify(p, "").family for p in PROMPTS.values()} == set(FAMILIES)


# ---------------------------------------------------------------- scores


def _words(n: int, end: str = "So the answer is 444.") -> str:
    return "lorem " * (n - len(end.split())) + end


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        (_words(120), 1.0),  # up to 120 words: no penalty
        (_words(360), 0.9),  # (360 - 120) / 480 * 0.2 = 0.1
        (_words(600), 0.8),
        (_words(2000), 0.8),  # the length penalty stops at 0.2
        ("The answer is 444.\nThe answer is 444.\nThe answer is 444.", 0.8),  # one line 3 times
        ("The answer is 444.\nThe answer is 444.", 1.0),  # twice is fine
        ("Yes. Yes. Yes. 444", 1.0),  # repeats shorter than 8 characters are not counted
        ("It is 444. " * 3 + _words(600), 0.6),  # both penalties
    ],
)
def test_concision_and_repetition_penalties(reply: str, score: float) -> None:
    verdict = verify(ARITH, reply)
    assert verdict.status == "correct" and verdict.score == pytest.approx(score)


def test_penalties_never_touch_wrong_or_missing_answers() -> None:
    assert verify(ARITH, _words(2000, "So the answer is 454.")).score == 0.0
    assert verify(ARITH, "lorem " * 2000).score == -1.0


def test_only_the_start_of_a_huge_reply_is_read() -> None:
    assert verify(ARITH, "x" * MAX_REPLY_CHARS + " 444").status == "no_answer"
    assert verify(ARITH, "444 " + "x" * MAX_REPLY_CHARS).status == "correct"


# ---------------------------------------------------------------- prompts and arguments


@pytest.mark.parametrize(
    "prompt",
    [
        "",
        "Tell me a joke.",
        "What is the capital of Atlantis?",
        "What is the opposite of 'banana'?",
        "Sort these numbers from smallest to largest: a, b.",
        "What is 2 + 2? Also, tell me a joke.",  # the question must end the prompt
        "Whatever. Is 7 even or odd?!",
    ],
)
def test_unknown_prompts_raise(prompt: str) -> None:
    with pytest.raises(UnknownPromptError, match="use a reward model"):
        verify(prompt, "4")


def test_non_strings_raise_type_errors_naming_the_argument() -> None:
    with pytest.raises(TypeError, match="prompt must be a str"):
        verify(None, "4")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reply must be a str"):
        verify(ARITH, b"444")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"messages\[1\]\['content'\]"):
        score_conversation([{"role": "user", "content": ARITH}, {"role": "assistant", "content": 444}])
    with pytest.raises(TypeError, match="messages"):
        score_conversation("hello")  # type: ignore[arg-type]


def test_verdict_is_frozen_and_judge_id_is_stable() -> None:
    verdict = verify(ARITH, "444")
    assert isinstance(verdict, Verdict)
    with pytest.raises(AttributeError):
        verdict.score = 2.0  # type: ignore[misc]
    assert JUDGE_ID == "verifiable-judge-v1"


def test_score_conversation_uses_the_last_user_and_assistant_messages() -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": PARITY},
        {"role": "assistant", "content": "719 is odd."},
    ]
    assert score_conversation(messages) == 1.0
    assert score_conversation([*messages[:-1], {"role": "assistant", "content": "even"}]) == 0.0
    with pytest.raises(UnknownPromptError):
        score_conversation([{"role": "assistant", "content": "4"}])


# ---------------------------------------------------------------- the fixture


@pytest.mark.parametrize("split", ["train_prefs", "test_prefs"])
def test_every_fixture_pair_verifies_as_labelled(split: str) -> None:
    """Chosen: correct (short enough for no penalty). Rejected with score_rejected >= 3: a wrong answer that looks
    like one; <= 2: evasive or off-task, with no answer of the family's kind."""
    for i, row in enumerate(ultrafeedback_fixture_rows(split)):
        prompt = row["prompt"]
        chosen = verify(prompt, row["chosen"][-1]["content"])
        rejected = verify(prompt, row["rejected"][-1]["content"])
        assert chosen.status == "correct" and chosen.score == 1.0, (i, prompt, chosen)
        expected = "wrong" if row["score_rejected"] >= 3 else "no_answer"
        assert rejected.status == expected, (i, prompt, row["rejected"][-1]["content"], rejected)


@pytest.mark.parametrize("family", sorted(TASK_FAMILIES))
def test_every_candidate_reply_of_every_style_verifies_as_built(family: str) -> None:
    """Beyond the rows drawn: every wrong candidate, evasive and off-task reply the generators can make."""
    rng = random.Random(f"verify-all:{family}")
    for _ in range(25):
        task = TASK_FAMILIES[family](rng)
        for style in STYLES:
            seed = rng.getrandbits(32)
            for tagged in (False, True):
                right = render_reply(family, task, task.answer, style, seed, tagged=tagged)
                assert verify(task.question, right).status == "correct", right
                for value in task.wrong:
                    wrong = render_reply(family, task, value, style, seed, tagged=tagged)
                    assert verify(task.question, wrong).status == "wrong", wrong
            no_answers = [evasive_reply(family, task, style, right, rng)]
            no_answers += [off_task_reply(family, style, right, rng, test=t) for t in (False, True)]
            if family not in ("arithmetic", "count_letters", "sort_numbers", "parity"):
                no_answers.append(off_task_reply(family, style, right, rng, test=False, countdown=True))
            for reply in no_answers:
                assert verify(task.question, reply).status == "no_answer", reply


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_smoltalk_reply_verifies_correct(split: str) -> None:
    for row in smoltalk_fixture_rows(split):
        assert score_conversation(row["messages"]) == 1.0
        messages = row["messages"]
        for i, message in enumerate(messages):
            if message["role"] == "assistant":
                assert verify(messages[i - 1]["content"], message["content"]).status == "correct"


# ---------------------------------------------------------------- hostile and arbitrary text

REPLY_ALPHABET = st.sampled_from(
    list("0123456789,.-−+×*()<>/ \n'\"") + ["even", "odd", "Paris", "Madrid", "cold", "warm", "PLANET", "river",
    "planet", "tenalp", "candle", "<answer>", "</answer>", "and ", "9,801", "1.5"]
)  # fmt: skip
replies = st.one_of(st.text(max_size=400), st.lists(REPLY_ALPHABET, max_size=200).map("".join))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=st.sampled_from(sorted(PROMPTS)), reply=replies)
def test_arbitrary_replies_never_raise_and_stay_bounded(family: str, reply: str) -> None:
    verdict = verify(PROMPTS[family], reply)
    assert verdict.family == family
    assert -1.0 <= verdict.score <= 1.0
    assert (verdict.status == "correct") == (verdict.score >= 0.6)
    assert (verdict.status == "no_answer") == (verdict.score == -1.0)


@settings(max_examples=300, deadline=None)
@given(
    prompt=st.one_of(st.text(max_size=300), st.sampled_from(list(PROMPTS.values())).map(lambda p: "x\n" + p))
)
def test_arbitrary_prompts_give_a_verdict_or_unknown_prompt(prompt: str) -> None:
    try:
        verdict = verify(prompt, "444")
    except UnknownPromptError:
        return
    assert verdict.family in FAMILIES and -1.0 <= verdict.score <= 1.0


@pytest.mark.parametrize(
    "reply",
    [
        "1" * 1_000_000,
        "1, " * 333_333,
        "-" * 1_000_000,
        "1," * 500_000,
        "planet " * 150_000,
        "planet" + " " * 1_000_000 + "river",
        "a" * 1_000_000,
        "The answer is 444.\n" * 55_000,
        "9" * 5000 + ".5",
    ],
)
def test_megabyte_replies_are_fast(reply: str) -> None:
    for prompt in PROMPTS.values():
        started = time.perf_counter()
        verdict = verify(prompt, reply)
        assert time.perf_counter() - started < 1.0, (prompt, reply[:20])
        assert -1.0 <= verdict.score <= 1.0
    assert verify("x" * 1_000_000 + " " + ARITH, "444").status == "correct"  # a huge system prompt

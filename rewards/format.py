"""Completion-text helpers and format-shaping rewards for the <think>/<answer> protocol.

Everything here treats model output as untrusted: only linear-time ``str`` methods (find/rfind/count),
no regexes with backtracking, and no function raises on odd completions. A batch that is not a list is a
caller's bug, not model output: ``check_batch`` stops it with a message naming the argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


def check_batch(reward: str, **batches: Any) -> None:
    """TypeError naming the argument unless each of ``batches`` is a list (or tuple), one entry per completion.

    TRL passes every reward lists; anything else (None, a single string, a dict) would otherwise be scored
    character by character, silently return ``[]``, or fail deep inside the reward.
    """
    for argument, value in batches.items():
        if not isinstance(value, (list, tuple)):
            raise TypeError(
                f"{reward} reward: {argument} must be a list with one entry per completion (as TRL passes it), "
                f"got {type(value).__name__}"
            )


def check_lengths(reward: str, completions: Sequence[Any], **columns: Sequence[Any]) -> None:
    """ValueError unless every column has one entry per completion: a mismatch is a caller or config bug, not
    model output, so it is loud rather than silently zero. Keys are the columns' plural names in the message."""
    if any(len(column) != len(completions) for column in columns.values()):
        counts = " and ".join(f"{len(column)} {name}" for name, column in columns.items())
        raise ValueError(f"{reward} reward: got {len(completions)} completions but {counts}")


def content_text(content: Any) -> str:
    """Message content as text: plain strings, or multimodal-style lists of ``{"type": "text", "text": ...}``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return ""


def completion_text(completion: Any) -> str:
    """Plain text of a completion.

    Accepts a string, a message dict (``{"content": ...}``) or a TRL conversational completion
    (list of message dicts). For lists, the contents of all assistant messages (messages without a role
    count as assistant) are concatenated in order, so the last ``<answer>`` across turns wins.
    Anything else yields ``""``.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        texts = []
        for message in completion:
            if isinstance(message, str):
                texts.append(message)
            elif isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                texts.append(content_text(message.get("content")))
        return "\n".join(texts)
    return ""


def extract_answer(text: Any) -> str | None:
    """Raw body of the last complete ``<answer>...</answer>`` span, or None.

    Linear time: the last ``<answer>`` that precedes the last ``</answer>``, closed by the first ``</answer>``
    after it. An ``<answer>`` without any closing tag after it yields None (when there is no earlier
    complete span).
    """
    if not isinstance(text, str):
        return None
    end = text.rfind(ANSWER_CLOSE)
    if end < 0:
        return None
    start = text.rfind(ANSWER_OPEN, 0, end)
    if start < 0:
        return None
    body_start = start + len(ANSWER_OPEN)
    return text[body_start : text.find(ANSWER_CLOSE, body_start)]


def _seeded_prefix(prompt: Any) -> str:
    """``"<think>"`` when the prompt already opened the think block (TinyZero "base" template ends with it)."""
    if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[-1], dict):
        # continue_final_message style: a trailing assistant turn that the completion continues
        prompt = content_text(prompt[-1].get("content")) if prompt[-1].get("role") == "assistant" else ""
    if isinstance(prompt, str) and prompt[-256:].rstrip().endswith(THINK_OPEN):
        return THINK_OPEN
    return ""


def _texts_with_prompts(completions: Sequence[Any], prompts: Any) -> list[str]:
    use_prompts = isinstance(prompts, (list, tuple)) and len(prompts) == len(completions)
    out = []
    for i, completion in enumerate(completions):
        prefix = _seeded_prefix(prompts[i]) if use_prompts else ""
        out.append(prefix + completion_text(completion))
    return out


def has_think_answer_format(text: str) -> bool:
    """``[preamble] <think> non-empty </think> <answer> non-empty </answer>`` with only whitespace between/after.

    Each of the four tags must appear exactly once; the preamble (e.g. "Let me solve this step by step.")
    is free text. An empty think block does not count: it is the answer-only format with two extra tags
    (see `answer_format_reward` for models trained to answer directly).
    """
    if not isinstance(text, str) or any(text.count(tag) != 1 for tag in _TAGS):
        return False
    a, b = text.find(THINK_OPEN), text.find(THINK_CLOSE)
    c, d = text.find(ANSWER_OPEN), text.find(ANSWER_CLOSE)
    if not a < b < c < d:
        return False
    thought = text[a + len(THINK_OPEN) : b]
    between = text[b + len(THINK_CLOSE) : c]
    after = text[d + len(ANSWER_CLOSE) :]
    body = text[c + len(ANSWER_OPEN) : d]
    return bool(thought.strip()) and not between.strip() and not after.strip() and bool(body.strip())


def has_answer_only_format(text: str) -> bool:
    """Exactly one ``<answer> non-empty </answer>`` span and nothing but whitespace around it (no think block)."""
    if not isinstance(text, str):
        return False
    stripped = text.strip()
    if not (stripped.startswith(ANSWER_OPEN) and stripped.endswith(ANSWER_CLOSE)):
        return False
    if any(stripped.count(tag) != (1 if tag in (ANSWER_OPEN, ANSWER_CLOSE) else 0) for tag in _TAGS):
        return False
    return bool(stripped[len(ANSWER_OPEN) : -len(ANSWER_CLOSE)].strip())


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 for the ``<think>...</think><answer>...</answer>`` structure (both bodies non-empty), else 0.0.

    If TRL's ``prompts`` kwarg shows the prompt already ends with ``<think>``, the completion is checked as
    if it started with that tag.
    """
    check_batch("format", completions=completions)
    try:
        texts = _texts_with_prompts(completions, kwargs.get("prompts"))
    except Exception:  # noqa: BLE001 - rewards must never crash training
        return [0.0] * len(completions)
    return [1.0 if has_think_answer_format(text) else 0.0 for text in texts]


def answer_format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the completion is exactly one ``<answer>...</answer>`` span (whitespace around it only), else 0.0.

    The format reward for models trained to answer directly, without a ``<think>`` block. When TRL's ``prompts``
    show the prompt already opened ``<think>`` (the "base" template), the completion may close it first:
    ``</think> <answer>...</answer>`` is what a direct-answer model writes after such a prompt.
    """
    check_batch("answer_format", completions=completions)
    try:
        prompts = kwargs.get("prompts")
        use_prompts = isinstance(prompts, (list, tuple)) and len(prompts) == len(completions)
        texts = []
        for i, completion in enumerate(completions):
            text = completion_text(completion)
            if use_prompts and _seeded_prefix(prompts[i]) and text.lstrip().startswith(THINK_CLOSE):
                text = text.lstrip()[len(THINK_CLOSE) :]
            texts.append(text)
    except Exception:  # noqa: BLE001 - rewards must never crash training
        return [0.0] * len(completions)
    return [1.0 if has_answer_only_format(text) else 0.0 for text in texts]


def tag_count_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """Soft shaping: 0.25 for each of ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` seen exactly once."""
    check_batch("tag_count", completions=completions)
    try:
        texts = _texts_with_prompts(completions, kwargs.get("prompts"))
    except Exception:  # noqa: BLE001
        return [0.0] * len(completions)
    return [0.25 * sum(text.count(tag) == 1 for tag in _TAGS) for text in texts]

"""Completion-text helpers and format-shaping rewards for the <think>/<answer> protocol.

Everything here treats model output as untrusted: only linear-time ``str`` methods (find/rfind/count),
no regexes with backtracking, and no function raises on odd input types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


def _content_text(content: Any) -> str:
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
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        texts = []
        for message in completion:
            if isinstance(message, str):
                texts.append(message)
            elif isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                texts.append(_content_text(message.get("content")))
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
        prompt = _content_text(prompt[-1].get("content")) if prompt[-1].get("role") == "assistant" else ""
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
    """``[preamble] <think> ... </think> <answer> non-empty </answer>`` with only whitespace between/after.

    Each of the four tags must appear exactly once; the preamble (e.g. "Let me solve this step by step.")
    is free text.
    """
    if not isinstance(text, str) or any(text.count(tag) != 1 for tag in _TAGS):
        return False
    a, b = text.find(THINK_OPEN), text.find(THINK_CLOSE)
    c, d = text.find(ANSWER_OPEN), text.find(ANSWER_CLOSE)
    if not a < b < c < d:
        return False
    between = text[b + len(THINK_CLOSE) : c]
    after = text[d + len(ANSWER_CLOSE) :]
    body = text[c + len(ANSWER_OPEN) : d]
    return not between.strip() and not after.strip() and bool(body.strip())


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 for the ``<think>...</think><answer>...</answer>`` structure, else 0.0.

    If TRL's ``prompts`` kwarg shows the prompt already ends with ``<think>``, the completion is checked as
    if it started with that tag.
    """
    try:
        texts = _texts_with_prompts(completions, kwargs.get("prompts"))
    except Exception:  # noqa: BLE001 - rewards must never crash training
        return [0.0] * _safe_len(completions)
    return [1.0 if has_think_answer_format(text) else 0.0 for text in texts]


def tag_count_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """Soft shaping: 0.25 for each of ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` seen exactly once."""
    try:
        texts = _texts_with_prompts(completions, kwargs.get("prompts"))
    except Exception:  # noqa: BLE001
        return [0.0] * _safe_len(completions)
    return [0.25 * sum(text.count(tag) == 1 for tag in _TAGS) for text in texts]


def _safe_len(obj: Any) -> int:
    try:
        return len(obj)
    except Exception:  # noqa: BLE001
        return 0

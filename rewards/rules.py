"""Programmatic rules as TRL rewards in [0, 1], weighted beside a judge: a length window and regex patterns.

``length_window`` gives 1 to a reply whose word count lies inside the window and falls linearly outside it (to
0 at no words, and to 0 at twice the upper bound). Bounds may be absolute (``min_words``/``max_words``) or
relative to the input (``min_ratio``/``max_ratio`` times the words of the dataset's ``source`` column, which
TRL passes as a keyword): that is what stops summarisation GRPO from collapsing to "Flood. Crews help.", since
a reply far shorter than its source loses reward whatever a judge thinks of it.

``patterns`` scores the share of ``required`` patterns found, times 0 when any ``forbidden`` one matches.
Model output is untrusted: matching uses the `regex` module with a time limit per search, and a search that
runs out of time counts as a failed rule (a required pattern not found, a forbidden one found).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import regex

from rewards.format import check_batch, completion_text

logger = logging.getLogger(__name__)

MATCH_TIMEOUT_S = 0.05
MAX_MATCH_CHARS = 20_000  # replies beyond this are searched on their first characters only


def word_count(text: str) -> int:
    return len(text.split())


def window_score(words: int, low: float, high: float) -> float:
    """1 inside [low, high]; words/low below it; 1 - (words - high)/high above it (0 at 2 * high)."""
    if words < low:
        return words / low if low > 0 else 1.0
    if words > high:
        return max(0.0, 1.0 - (words - high) / high)
    return 1.0


class LengthWindowReward:
    def __init__(
        self,
        *,
        min_words: int | None = None,
        max_words: int | None = None,
        min_ratio: float | None = None,
        max_ratio: float | None = None,
    ) -> None:
        self.__name__ = "length_window_reward"
        if all(v is None for v in (min_words, max_words, min_ratio, max_ratio)):
            raise ValueError(
                "length_window needs a window: set length_min_words/length_max_words (absolute) or "
                "length_min_ratio/length_max_ratio (relative to the `source` column)"
            )
        for name, value in (("min_words", min_words), ("min_ratio", min_ratio)):
            if value is not None and value < 0:
                raise ValueError(f"length_{name} must be >= 0, got {value}")
        for name, value in (("max_words", max_words), ("max_ratio", max_ratio)):
            if value is not None and value <= 0:
                raise ValueError(f"length_{name} must be > 0, got {value}")
        self.min_words, self.max_words = min_words, max_words
        self.min_ratio, self.max_ratio = min_ratio, max_ratio

    @property
    def relative(self) -> bool:
        return self.min_ratio is not None or self.max_ratio is not None

    def window(self, source_words: int | None) -> tuple[float, float]:
        """(low, high) in words for one input."""
        low, high = 0.0, float("inf")
        if self.min_words is not None:
            low = max(low, float(self.min_words))
        if self.max_words is not None:
            high = min(high, float(self.max_words))
        if source_words is not None:
            if self.min_ratio is not None:
                low = max(low, self.min_ratio * source_words)
            if self.max_ratio is not None:
                high = min(high, max(1.0, self.max_ratio * source_words))
        return min(low, high), high

    def __call__(
        self, completions: Sequence[Any], source: Sequence[Any] | None = None, **kwargs: Any
    ) -> list[float]:
        check_batch("length_window", completions=completions)
        if self.relative:
            if source is None:
                raise ValueError(
                    "length_window: length_min_ratio/length_max_ratio are relative to the input, but the dataset "
                    "has no `source` column (Re:Fine and TL;DR prompts have one; use length_min_words/"
                    "length_max_words for other data)"
                )
            check_batch("length_window", source=source)
            if len(source) != len(completions):
                raise ValueError(f"length_window: {len(source)} sources but {len(completions)} completions")
        scores = []
        for i, completion in enumerate(completions):
            source_words = word_count(str(source[i] or "")) if self.relative else None
            low, high = self.window(source_words)
            scores.append(window_score(word_count(completion_text(completion)), low, high))
        return scores

    def __repr__(self) -> str:
        return (
            f"LengthWindowReward(min_words={self.min_words}, max_words={self.max_words}, "
            f"min_ratio={self.min_ratio}, max_ratio={self.max_ratio})"
        )


class PatternReward:
    def __init__(self, *, required: Sequence[str] = (), forbidden: Sequence[str] = ()) -> None:
        self.__name__ = "patterns_reward"
        required, forbidden = list(required or ()), list(forbidden or ())
        if not required and not forbidden:
            raise ValueError("patterns needs at least one of patterns_required or patterns_forbidden")
        self.required = [self._compile(p, "patterns_required") for p in required]
        self.forbidden = [self._compile(p, "patterns_forbidden") for p in forbidden]
        self.timeouts = 0

    @staticmethod
    def _compile(pattern: str, field_name: str) -> Any:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"{field_name}: patterns must be non-empty strings, got {pattern!r}")
        try:
            return regex.compile(pattern)
        except regex.error as exc:
            raise ValueError(f"{field_name}: {pattern!r} is not a valid regular expression ({exc})") from None

    def _found(self, pattern: Any, text: str, default: bool) -> bool:
        try:
            return pattern.search(text, timeout=MATCH_TIMEOUT_S) is not None
        except TimeoutError:
            self.timeouts += 1
            logger.warning(
                "patterns: %r ran out of time on a reply; counted as failing the rule", pattern.pattern
            )
            return default

    def score(self, text: str) -> float:
        text = text[:MAX_MATCH_CHARS]
        if any(self._found(p, text, default=True) for p in self.forbidden):
            return 0.0
        if not self.required:
            return 1.0
        return sum(self._found(p, text, default=False) for p in self.required) / len(self.required)

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        check_batch("patterns", completions=completions)
        return [self.score(completion_text(c)) for c in completions]

    def __repr__(self) -> str:
        return (
            f"PatternReward(required={[p.pattern for p in self.required]}, "
            f"forbidden={[p.pattern for p in self.forbidden]})"
        )

"""DAPO's soft overlong punishment (Yu et al. 2025, "DAPO", eq. 13) as a TRL reward function.

With L = max length and B = buffer, a completion of n tokens gets::

    0                      if n <= L - B
    ((L - B) - n) / B      if L - B < n <= L      (linear from 0 to -1)
    -1                     if n > L

times ``penalty_factor``. Lengths are token counts from TRL's ``completion_ids`` kwarg (what GRPOTrainer and
RLOOTrainer pass every reward function). Only when that kwarg is absent (a direct call, another trainer) is
the length estimated from the text at ``CHARS_PER_TOKEN`` characters per token, a rough English/BPE average.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rewards.format import completion_text

if TYPE_CHECKING:
    from rewards.config import RewardArguments

CHARS_PER_TOKEN = 4.0


def overlong_penalty(
    n_tokens: int, max_length: int, buffer_length: int, penalty_factor: float = 1.0
) -> float:
    """The DAPO penalty (0 .. -penalty_factor) for a completion of ``n_tokens`` tokens."""
    start = max_length - buffer_length
    if n_tokens <= start:
        return 0.0
    if n_tokens > max_length:
        return -penalty_factor
    return penalty_factor * (start - n_tokens) / buffer_length


def _length(completion: Any, ids: Any) -> int:
    if ids is not None:
        try:
            return len(ids)
        except TypeError:
            pass
    return math.ceil(len(completion_text(completion)) / CHARS_PER_TOKEN)


class OverlongReward:
    """Callable TRL reward; ``__name__`` is what TRL logs (``rewards/overlong_reward/mean``)."""

    def __init__(self, max_length: int, buffer_length: int, penalty_factor: float = 1.0) -> None:
        self.__name__ = "overlong_reward"
        if max_length < 1 or not 1 <= buffer_length <= max_length:
            raise ValueError(
                f"overlong: need 1 <= overlong_buffer_length ({buffer_length}) <= max length ({max_length})"
            )
        self.max_length, self.buffer_length, self.penalty_factor = max_length, buffer_length, penalty_factor

    def __call__(
        self, completions: Sequence[Any], completion_ids: Sequence[Any] | None = None, **kwargs: Any
    ) -> list[float]:
        if completion_ids is not None and len(completion_ids) != len(completions):
            completion_ids = None  # not one per completion: do not guess the pairing
        return [
            overlong_penalty(
                _length(c, None if completion_ids is None else completion_ids[i]),
                self.max_length,
                self.buffer_length,
                self.penalty_factor,
            )
            for i, c in enumerate(completions)
        ]

    def __repr__(self) -> str:
        return (
            f"OverlongReward(max_length={self.max_length}, buffer_length={self.buffer_length}, "
            f"penalty_factor={self.penalty_factor})"
        )


def make_overlong_reward(
    reward_args: RewardArguments, max_completion_length: int | None = None
) -> OverlongReward:
    """Factory for the registry: ``overlong_max_length`` or else the trainer's ``max_completion_length``."""
    max_length = reward_args.overlong_max_length or max_completion_length
    if not max_length:
        raise ValueError(
            "overlong needs a max length: set overlong_max_length, or pass the trainer's max_completion_length "
            "to build_reward_funcs"
        )
    if reward_args.overlong_buffer_length > max_length:
        raise ValueError(
            f"overlong_buffer_length={reward_args.overlong_buffer_length} is longer than the max length "
            f"{max_length}; use a buffer below it (DAPO: 4096 of 20480 tokens, i.e. ~20%)"
        )
    return OverlongReward(max_length, reward_args.overlong_buffer_length, reward_args.overlong_penalty_factor)

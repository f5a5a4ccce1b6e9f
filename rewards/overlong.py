"""DAPO's soft overlong punishment (Yu et al. 2025, eq. 13) as a TRL reward, computed by TRL's own
``trl.rewards.get_soft_overlong_punishment``: 0 up to ``max_length - buffer_length`` tokens, then linear
down to -1 at ``max_length`` and -1 beyond, here times ``penalty_factor``.

TRL's function alone does not do the whole job, so this thin wrapper adds what the recipes rely on: the
``overlong_penalty_factor`` scale, the logged name ``overlong_reward`` (TRL's is
``soft_overlong_punishment_reward``; the reward curves and resumed runs key on ours), and a length for a call
without ``completion_ids`` (a direct call, another trainer): the text at ``CHARS_PER_TOKEN`` characters per
token, a rough English/BPE average. GRPOTrainer and RLOOTrainer always pass ``completion_ids``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rewards.format import check_batch, completion_text

CHARS_PER_TOKEN = 4.0


def _length(completion: Any) -> int:
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
        # Imported here: trl.rewards costs ~0.3 s, and `import rewards` (eval, benchmarks) never needs it.
        from trl.rewards import get_soft_overlong_punishment

        check_batch("overlong", completions=completions)
        if completion_ids is not None:
            check_batch("overlong", completion_ids=completion_ids)
            if len(completion_ids) != len(completions):
                completion_ids = None  # not one per completion: do not guess the pairing
        if completion_ids is None:
            completion_ids = [range(_length(c)) for c in completions]  # TRL only reads len()
        # Built per call, not stored: older TRL (setup.cfg allows >=1.10) returns a closure, which cannot be pickled.
        punish = get_soft_overlong_punishment(self.max_length, self.buffer_length)
        return [self.penalty_factor * value for value in punish(completion_ids)]

    def __repr__(self) -> str:
        return (
            f"OverlongReward(max_length={self.max_length}, buffer_length={self.buffer_length}, "
            f"penalty_factor={self.penalty_factor})"
        )


def make_overlong_reward(
    *, buffer_length: int, max_length: int | None, penalty_factor: float = 1.0
) -> OverlongReward:
    """Factory for the registry; ``max_length`` is ``overlong_max_length`` or else the trainer's
    ``max_completion_length`` (see `rewards.config.RewardArguments.reward_settings`)."""
    if not max_length:
        raise ValueError(
            "overlong needs a max length: set overlong_max_length, or pass the trainer's max_completion_length "
            "to build_reward_funcs"
        )
    if buffer_length > max_length:
        raise ValueError(
            f"overlong_buffer_length={buffer_length} is longer than the max length {max_length}; use a buffer "
            f"below it (DAPO: 4096 of 20480 tokens, i.e. ~20%)"
        )
    return OverlongReward(max_length, buffer_length, penalty_factor)

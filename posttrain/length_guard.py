"""Stop an RL run whose replies collapse in length (Re:Fine's first TL;DR attempt: "Flood. Crews help.").

TRL logs the mean completion length of every step (`completions/mean_length`). The guard takes the mean of
the first `baseline_logs` logged steps as the start, and when the length stays below `ratio` times that for
`patience` consecutive logs it warns, records why, and asks the trainer to stop (the checkpoint so far is
saved as usual). Rewards that cannot be won by collapsing (`rewards.rules.LengthWindowReward`) are the
first defence; this stops the compute when they were not enough.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

LENGTH_KEY = "completions/mean_length"


class LengthCollapseGuard(TrainerCallback):
    def __init__(self, ratio: float, *, patience: int = 3, baseline_logs: int = 2) -> None:
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"length_collapse_ratio must be between 0 and 1 (0: off), got {ratio}")
        if patience < 1 or baseline_logs < 1:
            raise ValueError("length_collapse_patience and the baseline must be >= 1")
        self.ratio, self.patience, self.baseline_logs = ratio, patience, baseline_logs
        self.start: list[float] = []
        self.below = 0
        self.stopped_at: int | None = None
        self.last: float | None = None

    @property
    def baseline(self) -> float | None:
        return sum(self.start) / len(self.start) if len(self.start) >= self.baseline_logs else None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        value = (logs or {}).get(LENGTH_KEY)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        self.last = float(value)
        if self.baseline is None:
            self.start.append(float(value))
            return
        if value < self.ratio * self.baseline:
            self.below += 1
        else:
            self.below = 0
        if self.below >= self.patience and self.stopped_at is None:
            self.stopped_at = state.global_step
            logger.warning(
                "length collapse: mean completion length %.1f tokens for %d logged steps, below %.2f x the start's "
                "%.1f; stopping at step %d. Widen the task's length window or raise its weight (reward_weights), "
                "or set length_collapse_ratio: 0 to train on.",
                value,
                self.below,
                self.ratio,
                self.baseline,
                state.global_step,
            )
            control.should_training_stop = True

    def summary(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "patience": self.patience,
            "start_mean_length": self.baseline,
            "last_mean_length": self.last,
            "stopped_at_step": self.stopped_at,
        }

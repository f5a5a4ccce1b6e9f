"""The curves of an RL run from TRL's logs: the reward (JSONL + PNG) and a panel of training signals.

`RewardCurveCallback` rewrites `output_dir/reward_curve.{jsonl,png}` and `training_curves.png` (reward,
validation accuracy, entropy, KL to the start, completion length, clip ratio, groups without learning signal)
atomically at every log and at the end of training; `curve_summary` gives the first and last logged means.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from posttrain.io import atomic_write_jsonl

logger = logging.getLogger(__name__)

REWARD_CURVE_JSONL = "reward_curve.jsonl"
REWARD_CURVE_PNG = "reward_curve.png"
TRAINING_CURVES_PNG = "training_curves.png"
NO_SIGNAL_KEY = "no_signal_groups"
SIGNAL_KEYS = (
    "kl",
    "completions/mean_length",
    "step_time",
    "learning_rate",
    "entropy",
    "clip_ratio/region_mean",
    "frac_reward_zero_std",
    NO_SIGNAL_KEY,
)
VALIDATION_KEYS = ("val/accuracy", "val/format_rate", "val/kl_to_start")


def reward_rows(log_history: Sequence[dict]) -> list[dict]:
    """One row per training log that carries rewards: step, total reward (mean/std), per-function means."""
    rows = []
    for entry in log_history:
        if "reward" not in entry or "step" not in entry or "train_runtime" in entry:
            continue
        row = {"step": entry["step"], "reward": entry.get("reward"), "reward_std": entry.get("reward_std")}
        for key, value in entry.items():
            if key.startswith("rewards/") and key.endswith("/mean"):
                row[key[len("rewards/") : -len("/mean")]] = value
        for key in SIGNAL_KEYS:
            if key in entry:
                row[key] = entry[key]
        rows.append(row)
    return rows


def validation_rows(log_history: Sequence[dict]) -> list[dict]:
    """The in-training validation points (`posttrain.validation`), one per evaluated step."""
    rows = {}
    for entry in log_history:
        if "step" in entry and "val/accuracy" in entry:
            rows[entry["step"]] = {
                "step": entry["step"],
                **{k: entry[k] for k in VALIDATION_KEYS if k in entry},
            }
    return [rows[k] for k in sorted(rows)]


class GroupSignalMeter:
    """Wraps a reward function and logs the share of prompt groups whose rewards from it are all equal.

    Such a group has zero advantage: no learning signal. TRL's own `frac_reward_zero_std` compares a float32
    std with zero and misses groups of equal rewards that are not exact binary fractions (eight 0.2s have a
    std of ~3e-8), so it reads 0 on Countdown. The wrapped function's outputs pass through unchanged.
    """

    def __init__(self, func: Any, num_generations: int) -> None:
        self.func = func
        self.num_generations = num_generations
        self.__name__ = getattr(func, "__name__", "reward")
        self.trainer: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> list[float]:
        values = self.func(*args, **kwargs)
        n = self.num_generations
        groups = [values[i : i + n] for i in range(0, len(values) - n + 1, n)]
        metrics = getattr(self.trainer, "_metrics", None)
        if groups and metrics is not None:
            flat = sum(1 for g in groups if max(g) - min(g) < 1e-6)
            mode = "train" if getattr(self.trainer.model, "training", True) else "eval"
            metrics[mode][NO_SIGNAL_KEY].append(flat / len(groups))
        return values


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over `window` values (NaNs skipped), one value per full window."""
    out = []
    for end in range(window, len(values) + 1):
        chunk = [v for v in values[end - window : end] if _finite(v)]
        out.append(sum(chunk) / len(chunk) if chunk else float("nan"))
    return out


def plot_reward_curve(rows: Sequence[dict], path: str | os.PathLike, title: str = "reward") -> Path | None:
    """Total and per-function reward by step as a PNG, written atomically. None when there is nothing to plot."""
    if not rows:
        return None
    import matplotlib  # lazy: only a run that logs rewards draws, and pyplot takes a second to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4))
    try:
        total = [r["reward"] if _finite(r["reward"]) else float("nan") for r in rows]
        ax.plot(steps, total, marker="o", markersize=3, linewidth=1, alpha=0.6, label="total (weighted)")
        if all(_finite(r.get("reward_std")) for r in rows):
            lo = [t - r["reward_std"] for t, r in zip(total, rows, strict=True)]
            hi = [t + r["reward_std"] for t, r in zip(total, rows, strict=True)]
            ax.fill_between(steps, lo, hi, alpha=0.1, label="± std over completions")
        # One step's mean is noisy (a few prompts); the moving average shows the trend.
        window = max(3, len(rows) // 8)
        if len(rows) >= 2 * window:
            avg = moving_average(total, window)
            ax.plot(
                steps[window - 1 :], avg, color="black", linewidth=2.5, label=f"total, mean of {window} steps"
            )
        skip = {"step", "reward", "reward_std", *SIGNAL_KEYS}
        names = sorted({k for r in rows for k in r if k not in skip})
        for name in names:
            ax.plot(steps, [r.get(name, float("nan")) for r in rows], linestyle="--", label=name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("mean reward per completion")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(
            fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5)
        )  # outside: the curves stay visible
        fig.tight_layout()
        save_png(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path


def save_png(fig: Any, path: Path, dpi: int) -> None:
    """Write a figure atomically: a reader never sees half a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _series(rows: Sequence[dict], key: str) -> tuple[list, list]:
    pairs = [(r["step"], r[key]) for r in rows if _finite(r.get(key))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_training_curves(
    rows: Sequence[dict], validation: Sequence[dict], path: str | os.PathLike, title: str = "training"
) -> Path | None:
    """Six panels by step: reward, validation accuracy, entropy, KL to the start, completion length, and the
    clip ratio with the share of groups without signal. Panels without data say so. Written atomically."""
    if not rows and not validation:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("mean reward", [("reward", rows, "reward")]),
        ("greedy validation accuracy", [("accuracy", validation, "val/accuracy")]),
        ("entropy (nats/token)", [("entropy", rows, "entropy")]),
        (
            "KL to the start",
            [("validation completions", validation, "val/kl_to_start"), ("TRL kl (beta > 0)", rows, "kl")],
        ),
        ("completion length (tokens)", [("mean", rows, "completions/mean_length")]),
        (
            "share",
            [("clip ratio", rows, "clip_ratio/region_mean"), ("groups without signal", rows, NO_SIGNAL_KEY)],
        ),
    ]
    path = Path(path)
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    try:
        for ax, (name, series) in zip(axes.flat, panels, strict=True):
            drawn = False
            for label, source, key in series:
                steps, values = _series(source, key)
                if not values:
                    continue
                drawn = True
                ax.plot(steps, values, marker="o", markersize=2, linewidth=1, alpha=0.7, label=label)
                window = max(3, len(values) // 8)
                if source is rows and len(values) >= 2 * window:
                    ax.plot(steps[window - 1 :], moving_average(values, window), color="black", linewidth=2)
            if not drawn:
                ax.text(
                    0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray"
                )
            elif len(series) > 1:
                ax.legend(fontsize=7)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("optimizer step", fontsize=8)
            ax.grid(alpha=0.3)
        fig.suptitle(title)
        fig.tight_layout()
        save_png(fig, path, dpi=90)
    finally:
        plt.close(fig)
    return path


class RewardCurveCallback(TrainerCallback):
    """Rewrites `reward_curve.jsonl` and `reward_curve.png` in `output_dir` at every log and at the end.

    Rebuilt from `state.log_history`, which a resumed run restores from its checkpoint, so the curve of a
    killed and relaunched run is continuous.
    """

    def __init__(self, output_dir: str | os.PathLike, title: str = "reward") -> None:
        self.output_dir = Path(output_dir)
        self.title = title
        self.rows: list[dict] = []

    def _write(self, state: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.rows = reward_rows(state.log_history)
        if not self.rows:
            return
        atomic_write_jsonl(self.output_dir / REWARD_CURVE_JSONL, self.rows)
        try:
            plot_reward_curve(self.rows, self.output_dir / REWARD_CURVE_PNG, self.title)
            plot_training_curves(
                self.rows,
                validation_rows(state.log_history),
                self.output_dir / TRAINING_CURVES_PNG,
                self.title,
            )
        except Exception as exc:  # noqa: BLE001 - a plotting problem must never stop training
            logger.warning("Could not draw the training curves: %s", exc)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        self._write(state)

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self._write(state)


def curve_summary(rows: Sequence[dict], window: int = 3) -> dict:
    """Mean total reward over the first and last `window` logged steps (None when nothing was logged)."""
    values = [(r["step"], r["reward"]) for r in rows if _finite(r.get("reward"))]
    if not values:
        return {"first": None, "last": None, "n_logs": 0}
    first = values[:window]
    last = values[-window:]
    return {
        "first": round(sum(v for _, v in first) / len(first), 4),
        "first_steps": [s for s, _ in first],
        "last": round(sum(v for _, v in last) / len(last), 4),
        "last_steps": [s for s, _ in last],
        "n_logs": len(values),
    }

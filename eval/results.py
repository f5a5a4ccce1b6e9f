"""All evaluation results under a runs folder, side by side: terminal table, markdown and a PNG bar chart.

    python -m eval.results runs/            # or: make results
    python -m eval.results runs/ --markdown runs/results.md --png runs/results.png

Collects every ``summary.json`` below the folder: Countdown evaluations (`eval.countdown`, metric: accuracy
with its standard error) and win-rate evaluations (`eval.winrate`, metric: win rate with its 95% Wilson
interval; the details add the length-controlled and length-matched win rates and the judge probes), and
test-time compute curves (`eval.test_time`: best-of-N and first-verified at the largest N per verifier). One row per summary, in the order the evaluations ran (their ``timestamp``, else the
file's time), so ``sft-countdown/eval-before`` -> ``sft-countdown/eval-after`` -> ``grpo-countdown/...`` read
as a progression. A summary that cannot be read
or is of an unknown kind is reported and skipped, never fatal. The chart has one panel per task, a bar per run,
with the error bars above (±1 standard error for accuracy, the 95% interval for win rate).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from posttrain.cli import run_cli
from posttrain.io import atomic_write_text

logger = logging.getLogger("eval.results")

COLUMNS = ("run", "task", "model", "metric", "value", "interval", "n", "details")


@dataclass
class Row:
    run: str
    task: str
    model: str
    metric: str
    value: float
    low: float
    high: float
    n: int
    details: str

    def cells(self) -> list[str]:
        return [
            self.run,
            self.task,
            self.model,
            self.metric,
            f"{self.value:.3f}",
            f"[{self.low:.3f}, {self.high:.3f}]",
            str(self.n),
            self.details,
        ]


def _rows(run: str, s: dict[str, Any]) -> list[Row]:
    """The rows of one summary: one for an evaluation, several for a test-time compute curve."""
    if s.get("task") == "countdown" and isinstance(s.get("runs"), dict) and "strategy" in s:
        return _test_time_rows(run, s)
    row = _row(run, s)
    return [row] if row is not None else []


def _test_time_rows(run: str, s: dict[str, Any]) -> list[Row]:
    """eval.test_time: best-of-N and first-verified at the largest N per verifier, oracle pass@N in the details."""
    rows = []
    for key, r in s["runs"].items():
        curve = r.get("curve") if isinstance(r, dict) else None
        if not isinstance(curve, list) or not curve or not isinstance(curve[-1], dict):
            continue  # live strategies (best_of_n / first_verified picks) have their own accuracy below
        last = curve[-1]
        n, n_tasks = last.get("n"), int(last.get("n_tasks") or 0)
        for strategy in ("best_of_n", "first_verified"):
            for verifier, m in (last.get(strategy) or {}).items():
                acc, err = _number(m.get("accuracy")), _number(m.get("accuracy_stderr")) or 0.0
                if acc is None:
                    continue
                tokens = m.get("tokens_per_task", last.get("tokens_per_task"))
                details = f"{key}, oracle pass@{n} {last.get('oracle_pass_at_n', 0):.3f}"
                details += f", {tokens:.0f} tokens/task" if _number(tokens) is not None else ""
                label = (
                    f"best-of-{n} ({verifier})"
                    if strategy == "best_of_n"
                    else f"first-verified@{n} ({verifier})"
                )
                rows.append(
                    Row(run, "countdown", str(s.get("model", "-")), label, acc, max(0.0, acc - err),
                        min(1.0, acc + err), n_tasks, details)
                )  # fmt: skip
    for key, r in s["runs"].items():
        if isinstance(r, dict) and _number(r.get("accuracy")) is not None and "curve" not in r:
            label = f"{s.get('strategy')} ({', '.join(s.get('verifiers') or [])})"
            details = f"{key}, {r.get('samples_per_task', 0):.1f} of {r.get('budget_per_task')} samples/task"
            acc = float(r["accuracy"])
            rows.append(Row(run, "countdown", str(s.get("model", "-")), label, acc, acc, acc, 0, details))
    return rows


def _row(run: str, s: dict[str, Any]) -> Row | None:
    task = s.get("task")
    if task == "countdown" and isinstance(s.get("accuracy"), (int, float)):
        acc = float(s["accuracy"])
        err = float(s.get("accuracy_stderr") or 0.0)
        source = s.get("task_source") if isinstance(s.get("task_source"), dict) else {}
        details = f"format {s.get('format_rate', 0):.2f}"
        if source.get("num_numbers"):
            details += f", {source['num_numbers']} numbers"
        metric = "greedy accuracy" if s.get("greedy", True) else "accuracy (pass@1)"
        return Row(
            run,
            "countdown",
            str(s.get("model", "-")),
            metric,
            acc,
            max(0.0, acc - err),
            min(1.0, acc + err),
            int(s.get("n_tasks") or 0),
            details,
        )
    if task == "winrate" and isinstance(s.get("win_rate"), (int, float)):
        low, high = s.get("win_rate_ci95") or (s["win_rate"], s["win_rate"])
        details = f"vs {s.get('reference', '-')}, ties {s.get('ties', 0)}"
        if s.get("n_failed"):
            details += f", failed {s['n_failed']}"
        details += _winrate_extras(s)
        return Row(
            run,
            "winrate",
            str(s.get("model", "-")),
            "win rate",
            float(s["win_rate"]),
            float(low),
            float(high),
            int(s.get("n_scored") or 0),
            details,
        )
    return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _winrate_extras(s: dict[str, Any]) -> str:
    """Length control and judge probes, when the summary has them (older summaries do not)."""
    parts = []
    lc, phi = _number(s.get("length_controlled_win_rate")), _number(s.get("length_effect"))
    if lc is not None:
        parts.append(f"LC {lc:.3f}" + (f" (phi {phi:+.2f})" if phi is not None else ""))
    matched = _number(s.get("length_matched_win_rate"))
    if matched is not None:
        parts.append(f"len-matched {matched:.3f} (n {s.get('length_matched_n', '?')})")
    best_of = s.get("best_of")
    if isinstance(best_of, dict) and _number(best_of.get("n")) is not None:
        parts.append(f"best-of-{int(best_of['n'])} at T={best_of.get('temperature')}")
    probes = s.get("judge_probes")
    if isinstance(probes, dict) and probes.get("skipped"):
        parts.append("probes skipped")
    elif isinstance(probes, dict) and "total" in probes:
        parts.append(
            f"probes {probes.get('passed')}/{probes['total']}" + ("" if probes.get("ok") else " FAILED")
        )
    return "".join(f", {p}" for p in parts)


def collect(root: str | Path) -> tuple[list[Row], list[str]]:
    """Rows for every readable summary.json below ``root`` and a note for each skipped one."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; run an evaluation first (e.g. make eval-countdown)")
    rows: list[tuple[str, Row]] = []
    skipped: list[str] = []
    for path in sorted(root.rglob("summary.json")):
        run = str(path.parent.relative_to(root)) if path.parent != root else root.name
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            skipped.append(f"{path}: unreadable ({exc})")
            continue
        found = _rows(run, summary) if isinstance(summary, dict) else []
        if not found:
            kind = summary.get("task") if isinstance(summary, dict) else type(summary).__name__
            skipped.append(f"{path}: not an evaluation summary this view knows (task={kind!r})")
            continue
        stamp = summary.get("timestamp") if isinstance(summary.get("timestamp"), str) else None
        stamp = stamp or datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(
            timespec="seconds"
        )
        rows.extend((stamp, row) for row in found)
    # Chronological: before -> SFT -> DPO -> RL reads top to bottom (path breaks ties).
    rows.sort(key=lambda item: (item[0], item[1].run))
    return [row for _, row in rows], skipped


PAIRED_COLUMNS = ("stage", "tasks", "start", "after", "difference", "95% CI", "gained/lost", "McNemar p")


def collect_paired(root: str | Path) -> list[list[str]]:
    """The chain SFT -> each post-SFT stage: one row per ``paired.json`` (written by `eval.paired --json`)."""
    rows = []
    for path in sorted(Path(root).rglob("paired.json")):
        try:
            r = json.loads(path.read_text(encoding="utf-8"))
            lo, hi = r["ci95"]
            rows.append(
                [
                    str(path.parent.relative_to(root)),
                    str(int(r["n_tasks"])),
                    f"{float(r['before']):.3f}",
                    f"{float(r['after']):.3f}",
                    f"{float(r['difference']):+.3f}",
                    f"[{float(lo):+.3f}, {float(hi):+.3f}]",
                    f"{int(r['gained'])}/{int(r['lost'])}",
                    f"{float(r['p_mcnemar']):.2g}",
                ]
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("skipped %s: not an eval.paired result (%s)", path, exc)
    return rows


def to_markdown(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Row], path: str | Path) -> Path:
    """One horizontal bar chart panel per task, error bars from each row's interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in ("countdown", "winrate") if any(r.task == t for r in rows)]
    heights = [max(1.5, 0.45 * sum(r.task == t for r in rows) + 1.0) for t in tasks]
    fig, axes = plt.subplots(
        len(tasks), 1, figsize=(9, sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        subset = [r for r in rows if r.task == task]
        y = list(range(len(subset)))[::-1]
        values = [r.value for r in subset]
        err = [[r.value - r.low for r in subset], [r.high - r.value for r in subset]]
        ax.barh(y, values, xerr=err, color="#4c72b0" if task == "countdown" else "#dd8452", capsize=3)
        ax.set_yticks(y, [f"{r.run}\n({r.model[-40:]})" for r in subset], fontsize=8)
        ax.set_xlim(0, 1)
        for yi, r in zip(y, subset, strict=True):  # label right of the error bar, inside the axes
            ax.text(min(r.high + 0.015, 0.92), yi, f"{r.value:.3f}", va="center", fontsize=8)
        if task == "winrate":
            ax.axvline(0.5, color="gray", linestyle="--", linewidth=1)
            ax.set_title("UltraFeedback win rate vs reference (95% Wilson interval)", fontsize=10)
        else:
            ax.set_title("Countdown held-out accuracy (± 1 s.e.)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)  # atomic: a reader never sees half a PNG
    return path


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m eval.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="?", default="runs", help="folder to search for summary.json files")
    parser.add_argument("--markdown", default=None, help="default: <runs>/results.md")
    parser.add_argument("--png", default=None, help="default: <runs>/results.png")
    args = parser.parse_args(argv)
    try:
        rows, skipped = collect(args.runs)
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None
    for note in skipped:
        print(f"skipped {note}", file=sys.stderr)
    if not rows:
        raise SystemExit(
            f"no evaluation summaries under {args.runs}; run make eval-countdown or make eval-winrate"
        )

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Results under {args.runs}")
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in ("value", "n") else "left")
    for row in rows:
        table.add_row(*row.cells())
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)
    paired = collect_paired(args.runs)
    text = to_markdown(rows)
    if paired:
        chain = Table(title="Post-SFT stages against their start, same held-out tasks (paired)")
        for col in PAIRED_COLUMNS:
            chain.add_column(col, justify="left" if col == "stage" else "right")
        for cells in paired:
            chain.add_row(*cells)
        console.print(chain)
        text += "\n| " + " | ".join(PAIRED_COLUMNS) + " |\n|" + "---|" * len(PAIRED_COLUMNS) + "\n"
        text += "".join("| " + " | ".join(cells) + " |\n" for cells in paired)
    markdown = Path(args.markdown or Path(args.runs) / "results.md")
    atomic_write_text(markdown, text)
    png = plot(rows, args.png or Path(args.runs) / "results.png")
    print(f"markdown: {markdown}\nchart: {png}")
    return rows


if __name__ == "__main__":
    run_cli(main)

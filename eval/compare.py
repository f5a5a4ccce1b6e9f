"""Side-by-side table of evaluation summaries (e.g. before and after SFT).

    python -m eval.compare runs/sft-countdown/eval-before runs/sft-countdown/eval-after [--markdown out.md]

Each argument is a `summary.json` or a folder holding one. Prints a table (accuracy, mean reward, format rate,
task count, model) and, when given `--markdown`, writes the same table as markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from posttrain.cli import run_cli
from posttrain.io import atomic_write_text

COLUMNS = ("run", "model", "tasks", "numbers", "accuracy", "mean reward", "format rate")


def load_summary(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no summary.json here (run the evaluation first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}: not valid JSON ({exc})") from exc


def _row(path: str, summary: dict) -> list[str]:
    def fmt(key: str) -> str:
        value = summary.get(key)
        return f"{value:.3f}" if isinstance(value, (int, float)) else "-"

    source = summary.get("task_source") or {}
    numbers = source.get("num_numbers", "-") if isinstance(source, dict) else "-"
    return [
        Path(path).name if Path(path).is_dir() else Path(path).parent.name,
        str(summary.get("model", "-")),
        str(summary.get("n_tasks", "-")),
        str(numbers),
        fmt("accuracy"),
        fmt("mean_reward"),
        fmt("format_rate"),
    ]


def compare(paths: list[str]) -> list[list[str]]:
    return [_row(p, load_summary(p)) for p in paths]


def _cell(text: str) -> str:
    # A "|" or a line break inside a value (a model path, say) would split the markdown row.
    return " ".join(text.splitlines()).replace("|", "\\|")


def to_markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("summaries", nargs="+", help="summary.json files or folders holding one")
    parser.add_argument("--markdown", help="also write the table as markdown to this file")
    args = parser.parse_args(argv)
    rows = compare(args.summaries)
    table = Table(title="Countdown evaluation")
    for col in COLUMNS:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # logs and pipes: don't squeeze the table into 80 columns
        console = Console(width=140)
    console.print(table)
    if args.markdown:
        atomic_write_text(args.markdown, to_markdown(rows))


if __name__ == "__main__":
    run_cli(main)

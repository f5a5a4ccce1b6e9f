"""eval.compare: the side-by-side table of evaluation summaries (what `make sft-countdown` prints and saves)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval import compare

REPO = Path(__file__).resolve().parent.parent
BEFORE = {
    "model": "embedded",
    "n_tasks": 200,
    "accuracy": 0.005,
    "mean_reward": 0.1045,
    "format_rate": 1.0,
    "task_source": {"heldout": True, "num_numbers": 3},
}
AFTER = {**BEFORE, "model": "runs/sft-countdown/model", "accuracy": 0.3125, "mean_reward": 0.38125}


def _write(folder: Path, summary: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_rows_hand_computed(tmp_path):
    before = _write(tmp_path / "eval-before", BEFORE)
    after = _write(tmp_path / "eval-after", AFTER)
    # A folder names the run by itself, a summary.json by its folder; a missing field is "-".
    bare = _write(tmp_path / "eval-bare", {"accuracy": 1, "task_source": None}) / "summary.json"
    assert compare.compare([str(before), str(after), str(bare)]) == [
        ["eval-before", "embedded", "200", "3", "0.005", "0.104", "1.000"],
        ["eval-after", "runs/sft-countdown/model", "200", "3", "0.312", "0.381", "1.000"],
        ["eval-bare", "-", "-", "-", "1.000", "-", "-"],
    ]


def test_markdown_table_hand_computed():
    rows = [["a", "m", "2", "3", "0.500", "0.550", "1.000"], ["b", "odd|name\nx", "-", "-", "-", "-", "-"]]
    assert compare.to_markdown(rows) == (
        "| run | model | tasks | numbers | accuracy | mean reward | format rate |\n"
        "|---|---|---|---|---|---|---|\n"
        "| a | m | 2 | 3 | 0.500 | 0.550 | 1.000 |\n"
        "| b | odd\\|name x | - | - | - | - | - |\n"
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["model", "n_tasks", "accuracy", "mean_reward", "format_rate", "task_source"]),
            st.one_of(st.none(), st.floats(allow_nan=False), st.integers(), st.text(max_size=5)),
        ),
        max_size=4,
    )
)
def test_every_summary_gives_one_full_row(summaries):
    rows = [compare._row(f"runs/x{i}", s) for i, s in enumerate(summaries)]
    assert all(len(row) == len(compare.COLUMNS) for row in rows)
    for row, summary in zip(rows, summaries, strict=True):
        for column, key in zip(row[4:], ("accuracy", "mean_reward", "format_rate"), strict=True):
            value = summary.get(key)
            assert column == (f"{value:.3f}" if isinstance(value, (int, float)) else "-")
    lines = compare.to_markdown(rows).splitlines()
    assert len(lines) == len(rows) + 2  # a line break inside a value does not split its row
    for line in lines[2:]:  # nor does a "|" add a cell
        assert len(re.split(r"(?<!\\)\|", line)) == len(compare.COLUMNS) + 2


def test_main_prints_and_writes_markdown(tmp_path, capsys):
    before = _write(tmp_path / "eval-before", BEFORE)
    after = _write(tmp_path / "eval-after", AFTER)
    markdown = tmp_path / "results.md"
    compare.main([str(before), str(after), "--markdown", str(markdown)])
    printed = capsys.readouterr().out
    assert "Countdown evaluation" in printed and "eval-before" in printed and "0.312" in printed
    assert markdown.read_text() == compare.to_markdown(compare.compare([str(before), str(after)]))


@pytest.mark.parametrize(
    "content, message",
    [(None, "no summary.json here (run the evaluation first)"), ("{not json", "not valid JSON")],
)
def test_missing_or_broken_summary_is_a_clear_error(tmp_path, content, message):
    folder = tmp_path / "eval-x"
    folder.mkdir()
    if content is not None:
        (folder / "summary.json").write_text(content)
    with pytest.raises(SystemExit, match=re.escape(message)):
        compare.load_summary(folder)
    proc = subprocess.run(
        [sys.executable, "-m", "eval.compare", str(folder)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr

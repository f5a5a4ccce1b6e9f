"""The results view: every summary.json under runs/ into a table, markdown and a PNG chart."""

from __future__ import annotations

import json

import pytest

from eval.results import collect, main, to_markdown


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


@pytest.fixture()
def runs(tmp_path):
    root = tmp_path / "runs"
    _write(
        root / "sft-countdown/eval-before/summary.json",
        {
            "task": "countdown",
            "model": "embedded",
            "accuracy": 0.0,
            "accuracy_stderr": 0.0,
            "format_rate": 0.0,
            "n_tasks": 200,
            "greedy": True,
            "task_source": {"num_numbers": 3},
            "timestamp": "2026-01-01T10:00:00+00:00",
        },
    )
    _write(
        root / "sft-countdown/eval-after/summary.json",
        {
            "task": "countdown",
            "model": "runs/sft-countdown/model",
            "accuracy": 0.15,
            "accuracy_stderr": 0.025,
            "format_rate": 0.9,
            "n_tasks": 200,
            "greedy": True,
            "task_source": {"num_numbers": 3},
            "timestamp": "2026-01-01T11:00:00+00:00",
        },
    )
    _write(
        root / "winrate/dpo-vs-ref/summary.json",
        {
            "task": "winrate",
            "model": "runs/dpo/model",
            "reference": "embedded",
            "win_rate": 0.6,
            "win_rate_ci95": [0.5, 0.69],
            "n_scored": 100,
            "ties": 3,
            "n_failed": 1,
            "timestamp": "2026-01-02T09:00:00+00:00",
        },
    )
    _write(root / "broken/summary.json", "{not json")
    _write(root / "other/summary.json", {"task": "something-else"})
    _write(root / "sft-countdown/model/run_summary.json", {"ignored": True})
    return root


def test_collect_reads_known_summaries_and_skips_others(runs):
    rows, skipped = collect(runs)
    # Chronological order (the summaries' timestamps), not alphabetical.
    assert [r.run for r in rows] == [
        "sft-countdown/eval-before",
        "sft-countdown/eval-after",
        "winrate/dpo-vs-ref",
    ]
    after = rows[1]
    assert (after.task, after.value, after.low, after.high, after.n) == ("countdown", 0.15, 0.125, 0.175, 200)
    win = rows[2]
    assert (win.metric, win.value, win.low, win.high) == ("win rate", 0.6, 0.5, 0.69)
    assert "ties 3" in win.details and "failed 1" in win.details
    assert len(skipped) == 2 and any("unreadable" in s for s in skipped)
    assert any("something-else" in s for s in skipped)
    md = to_markdown(rows)
    assert md.splitlines()[0].startswith("| run | task | model | metric | value")
    assert "| winrate/dpo-vs-ref | winrate | runs/dpo/model | win rate | 0.600 | [0.500, 0.690] | 100 |" in md


def test_main_writes_markdown_and_png(runs, capsys):
    rows = main([str(runs)])
    assert len(rows) == 3
    png = runs / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "winrate/dpo-vs-ref" in (runs / "results.md").read_text()
    captured = capsys.readouterr()
    assert "0.600" in captured.out and "skipped" in captured.err


def test_empty_or_missing_runs_folder(tmp_path):
    with pytest.raises(SystemExit, match="no evaluation summaries"):
        main([str(tmp_path)])
    with pytest.raises(SystemExit, match="is not a folder"):
        main([str(tmp_path / "missing")])


def test_winrate_details_show_length_control_and_judge_probes(tmp_path):
    base = {"task": "winrate", "model": "m", "reference": "r", "win_rate": 0.7, "win_rate_ci95": [0.6, 0.8]}
    _write(
        tmp_path / "a/summary.json",
        base
        | {
            "length_controlled_win_rate": 0.55,
            "length_effect": 1.234,
            "length_matched_win_rate": 0.5,
            "length_matched_n": 12,
            "judge_probes": {"passed": 13, "total": 15, "ok": False},
            "best_of": {"n": 4, "temperature": 0.7},
            "timestamp": "2026-01-01T00:00:00+00:00",
        },
    )
    _write(
        tmp_path / "b/summary.json",
        base
        | {
            "length_controlled_win_rate": None,
            "length_effect": None,
            "judge_probes": {"skipped": True},
            "timestamp": "2026-01-02T00:00:00+00:00",
        },
    )
    (a, b), _ = collect(tmp_path)
    assert "LC 0.550 (phi +1.23)" in a.details and "len-matched 0.500 (n 12)" in a.details
    assert "probes 13/15 FAILED" in a.details and "best-of-4 at T=0.7" in a.details
    assert b.details == "vs r, ties 0, probes skipped"  # no length-control numbers: nothing shown for them

"""benchmarks/countdown_sft_sweep.py: variant parsing, and one real (tiny) variant end to end so it cannot rot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def sweep():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import countdown_sft_sweep

        yield countdown_sft_sweep
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def test_variants_parse_and_name_themselves(sweep):
    spec = sweep.parse_variant("think=1,style=backward,n=1280,lr=2e-4")
    assert spec["n"] == 1280 and spec["lr"] == pytest.approx(2e-4) and spec["template"] == "short"
    assert sweep.variant_name(spec) == "backward-short-n1280-lr0.0002-ep1-b8"
    assert sweep.variant_name(sweep.parse_variant("think=1,tries=2,template=compact")).startswith(
        "search2-compact"
    )
    assert sweep.variant_name(sweep.parse_variant("lora=1")).endswith("-lora")
    with pytest.raises(SystemExit, match="'size=3' is not key=value with a key from"):
        sweep.parse_variant("n=4,size=3")


def test_one_variant_trains_evaluates_and_reports(sweep, tiny_model_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "rows.jsonl"
    argv = [
        "--variant",
        "think=1,style=backward,n=8,batch=4",
        "--model",
        str(tiny_model_dir),
        "--n_eval",
        "2",
    ]
    argv += ["--eval_numbers", "3", "--max_new_tokens", "4", "--bf16", "false", "--jsonl", str(out)]
    argv += ["--samples_dir", str(tmp_path / "samples")]
    assert sweep.main(argv) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["name"] == "backward-short-n8-lr0.0001-ep1-b4" and row["steps"] == 2
    assert row["train_tokens"] > 8 * 40  # backward traces are long: prompt + ~100 tokens each
    assert 0.0 <= row["acc3"] <= 1.0 and "acc4" not in row
    samples = tmp_path / "samples" / row["name"] / "3numbers" / "samples.jsonl"
    assert len(samples.read_text().splitlines()) == 2
    assert row["name"] in capsys.readouterr().out  # the table row is printed

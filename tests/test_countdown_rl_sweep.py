"""benchmarks/countdown_rl_sweep.py: variant keys, and completions in the start model's own style."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from posttrain.countdown import CountdownTask
from rewards.countdown import score

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def sweep():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import countdown_rl_sweep

        yield countdown_rl_sweep
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def _start(tmp_path: Path, **countdown) -> str:
    (tmp_path / "run_summary.json").write_text(json.dumps({"args": {"countdown": countdown}}))
    return str(tmp_path)


def test_every_documented_key_parses(sweep):
    spec = sweep.parse_variant("algo=grpo,greedy=1,guided=1,lr=1e-5")
    assert (spec["greedy"], spec["guided"], spec["lr"]) == (1, 1, 1e-5)
    assert sweep.variant_name(spec) == "grpo-lr=1e-05-guided=1-greedy=1"
    assert sweep.parse_variant("algo=sft,n=256")["algo"] in sweep.ALGOS
    with pytest.raises(SystemExit, match="not key=value"):
        sweep.parse_variant("greediness=1")
    assert sweep.parse_variant("algo=sft,sft_loss=dft")["sft_loss"] == "dft"
    with pytest.raises(SystemExit, match="sft_loss must be one of"):
        sweep.parse_variant("algo=sft,sft_loss=mse")


def test_start_style_and_ground_truth_follow_the_start_model(sweep, tmp_path):
    task = CountdownTask(target=21, nums=(17, 19, 2), solution="(19 * 2) - 17")
    trace_start = _start(tmp_path, warmstart_think=True, warmstart_style="backward")
    style = sweep.start_style(trace_start)
    assert style == {"think": True, "style": "backward"}
    trace = sweep.ground_truth(task, "short", style)
    assert trace.startswith("<think>\n") and "found" in trace
    assert score(trace, task.target, list(task.nums)) == 1.0

    direct = sweep.ground_truth(task, "short", sweep.start_style(str(tmp_path / "no-summary")))
    assert direct == "<answer>(19 * 2) - 17</answer>"
    assert score(direct, task.target, list(task.nums)) == 1.0

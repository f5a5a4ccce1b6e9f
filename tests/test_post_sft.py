"""Post-SFT tooling: validation tasks and callback, paired statistics, guided rollouts, RFT selection and recipe."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.paired import compare_dirs, compare_paired, mcnemar_exact, per_task_correct
from posttrain.countdown import CountdownTask, canonical_key, make_prompt
from posttrain.curves import GroupSignalMeter, validation_rows
from posttrain.data import heldout_tasks, is_heldout, validation_tasks
from posttrain.guidance import GuidedRollout, prompt_key
from posttrain.rft import RFTArguments, select_records

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def run(cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


# -- validation tasks ----------------------------------------------------------------------------------------


def test_validation_tasks_are_held_out_and_disjoint_from_the_evaluation():
    val = validation_tasks(50, num_numbers=(3,))
    assert len(val) == 50
    assert all(is_heldout(t.target, t.nums) for t in val)  # never trained on
    test_keys = {canonical_key(t.target, t.nums) for t in heldout_tasks(1000, num_numbers=(3,))}
    assert not test_keys & {canonical_key(t.target, t.nums) for t in val}
    assert val == validation_tasks(50, num_numbers=(3,))  # deterministic


# -- paired statistics ---------------------------------------------------------------------------------------


def test_mcnemar_exact_hand_computed():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)  # two-sided: 2 * (1/2)^6
    assert mcnemar_exact(1, 4) == pytest.approx(2 * (1 + 5) / 32)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_compare_paired_counts_and_interval():
    before = [1, 0, 0, 1, 0] * 20
    after = [1, 1, 0, 0, 1] * 20
    r = compare_paired(before, after)
    assert (r["gained"], r["lost"], r["n_tasks"]) == (40, 20, 100)
    assert r["difference"] == pytest.approx(0.2)
    assert r["ci95"][0] <= 0.2 <= r["ci95"][1]
    with pytest.raises(ValueError, match="not the same tasks"):
        compare_paired([1, 0], [1])


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
@settings(max_examples=60, deadline=None)
def test_compare_paired_properties(pairs):
    before = [a for a, _ in pairs]
    after = [b for _, b in pairs]
    r = compare_paired(before, after, n_boot=200)
    assert r["difference"] == pytest.approx((r["gained"] - r["lost"]) / len(pairs))
    assert r["ci95"][0] <= r["difference"] + 1e-9 and r["difference"] - 1e-9 <= r["ci95"][1]
    assert 0.0 <= r["p_mcnemar"] <= 1.0
    swapped = compare_paired(after, before, n_boot=200)
    assert swapped["p_mcnemar"] == pytest.approx(r["p_mcnemar"])


def _write_eval(folder: Path, tasks: list[tuple[int, list[int]]], correct: list[bool]) -> Path:
    folder.mkdir(parents=True)
    rows = [
        {"task_index": i, "sample_index": 0, "task": {"target": t, "nums": n}, "correct": c}
        for i, ((t, n), c) in enumerate(zip(tasks, correct, strict=True))
    ]
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_compare_dirs_refuses_different_tasks(tmp_path):
    a = _write_eval(tmp_path / "a", [(10, [1, 2, 3]), (12, [4, 5, 6])], [True, False])
    b = _write_eval(tmp_path / "b", [(10, [1, 2, 3]), (12, [4, 5, 6])], [True, True])
    c = _write_eval(tmp_path / "c", [(10, [1, 2, 3]), (13, [4, 5, 6])], [True, True])
    assert compare_dirs(a, b)["gained"] == 1
    assert per_task_correct(a)[1] == [1.0, 0.0]
    with pytest.raises(ValueError, match="different tasks"):
        compare_dirs(a, c)
    with pytest.raises(FileNotFoundError, match="eval.countdown"):
        compare_dirs(a, tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "samples.jsonl").write_text('{"task_index": "x"}\n')
    with pytest.raises(ValueError, match="samples.jsonl:1"):
        per_task_correct(tmp_path / "bad")


# -- group signal, guided rollouts, RFT selection ---------------------------------------------------------------


class _FakeTrainer:
    def __init__(self):
        from collections import defaultdict

        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.model = type("M", (), {"training": True})()


def test_group_signal_meter_counts_flat_groups_that_trl_misses():
    meter = GroupSignalMeter(lambda completions, **kw: [0.2, 0.2, 0.2, 0.2, 1.1, 0.2, 0.2, 0.2], 4)
    meter.trainer = _FakeTrainer()
    assert meter(completions=["x"] * 8) == [0.2, 0.2, 0.2, 0.2, 1.1, 0.2, 0.2, 0.2]
    assert meter.trainer._metrics["train"]["no_signal_groups"] == [0.5]
    assert meter.__name__ == "<lambda>"


def test_validation_rows_keep_one_point_per_step():
    history = [
        {"step": 0, "val/accuracy": 0.2},
        {"step": 1, "reward": 0.3},
        {"step": 0, "val/accuracy": 0.25},
    ]
    assert validation_rows(history) == [{"step": 0, "val/accuracy": 0.25}]


def test_select_records_keeps_distinct_verified_answers_and_optional_solutions():
    tasks = [CountdownTask(12, (21, 20, 12), "(21 - 20) * 12"), CountdownTask(50, (2, 25, 1), "2 * 25 * 1")]
    samples = [
        [
            "<answer>(21 - 20) * 12</answer>",
            "<answer>(21 - 20) * 12</answer>",
            "<answer>12 * (21 - 20)</answer>",
        ],
        ["<answer>2 + 25 + 1</answer>", "no answer"],
    ]
    records, stats = select_records(tasks, samples, "short", RFTArguments())
    assert [r["completion"][0]["content"] for r in records] == [
        "<answer>(21 - 20) * 12</answer>",
        "<answer>12 * (21 - 20)</answer>",
    ]
    assert stats == {"prompts": 2, "solved_share": 0.5, "records": 2}
    assert records[0]["prompt"] == make_prompt((21, 20, 12), 12, "short")
    records, _ = select_records(
        tasks, samples, "short", RFTArguments(rft_add_solutions=True, rft_max_per_prompt=1)
    )
    assert [r["completion"][0]["content"] for r in records] == [
        "<answer>(21 - 20) * 12</answer>",
        "<answer>2 * 25 * 1</answer>",
    ]
    with pytest.raises(ValueError, match="rft_rounds"):
        RFTArguments(rft_rounds=0)
    with pytest.raises(ValueError, match="rft_temperature"):
        RFTArguments(rft_temperature=0.0)


def test_guided_rollout_puts_the_solution_into_unsolved_groups_only(tiny_model_dir):
    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from posttrain.models import load_tokenizer

    solved = CountdownTask(12, (21, 20, 12), "(21 - 20) * 12")
    unsolved = CountdownTask(50, (2, 25, 1), "2 * 25 * 1")
    prompts = [make_prompt(t.nums, t.target, "short") for t in (solved, unsolved) for _ in range(2)]
    tasks = {
        prompt_key(make_prompt(t.nums, t.target, "short")): (t.target, list(t.nums), t.solution)
        for t in (solved, unsolved)
    }
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    accelerator = Accelerator(cpu=True)
    args = type("A", (), {"max_completion_length": 6, "temperature": 1.0, "top_k": 0, "top_p": 1.0})()
    trainer = type(
        "T",
        (),
        {"processing_class": tokenizer, "args": args, "model_wrapped": model, "accelerator": accelerator},
    )()
    rollout = GuidedRollout(tasks, num_generations=2)
    torch.manual_seed(0)
    out = rollout(prompts, trainer)
    assert len(out["completion_ids"]) == 4 and out["logprobs"] is None
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in out["completion_ids"]]
    # A random tiny model solves nothing: both groups get the known solution in their last slot, ending in EOS.
    assert texts[1] == "<answer>(21 - 20) * 12</answer>" and texts[3] == "<answer>2 * 25 * 1</answer>"
    assert out["completion_ids"][3][-1] == tokenizer.eos_token_id
    assert rollout.stats == {"groups": 2, "guided": 2, "greedy_right": 0}
    with pytest.raises(ValueError, match="num_generations"):
        GuidedRollout(tasks, num_generations=1)


# -- the RL recipe with validation, and the RFT recipe -------------------------------------------------------


def test_grpo_logs_validation_keeps_best_and_draws_the_panels(tiny_model_dir, tmp_path):
    out = tmp_path / "grpo"
    settings_ = dict(
        model_name_or_path=tiny_model_dir,
        output_dir=out,
        prompt_template="compact",
        countdown_train_size=16,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=12,
        max_steps=2,
        save_steps=1,
        logging_steps=1,
        report_to="none",
        disable_tqdm="true",
        countdown_validation_size=6,
        countdown_validation_steps=1,
        rollout_greedy_in_group="true",
    )
    flags = [x for k, v in settings_.items() for x in (f"--{k}", str(v))]
    run(
        [sys.executable, str(REPO / "recipes/grpo/run.py"), "--config", "recipes/grpo/countdown.yaml", *flags]
    )
    summary = json.loads((out / "run_summary.json").read_text())
    history = summary["validation"]["history"]
    assert [h["step"] for h in history] == [0, 1, 2]
    assert all(0.0 <= h["val/accuracy"] <= 1.0 and h["val/kl_to_start"] >= 0.0 for h in history)
    assert history[0]["val/kl_to_start"] == pytest.approx(0.0, abs=1e-3)
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert any("val/accuracy" in e for e in state["log_history"])  # beside TRL's metrics
    assert json.loads((out / "validation.json").read_text())["n_tasks"] == 6
    assert (out / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    rows = [json.loads(line) for line in (out / "reward_curve.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["no_signal_groups"] <= 1.0 for r in rows)
    assert summary["saved_step"] in (1, 2)
    # Every group's first member was the greedy answer (the tiny model never answers right).
    stats = summary["guided_groups"]
    assert stats["groups"] >= 4 and stats["guided"] == 0 and stats["greedy_right"] == 0
    assert not math.isnan(summary["validation"]["start_accuracy"])


def test_rft_recipe_runs_rounds_and_resumes(tiny_model_dir, tmp_path):
    out = tmp_path / "rft"
    cmd = [
        sys.executable,
        str(REPO / "recipes" / "rft" / "run.py"),
        "--config",
        "recipes/rft/countdown.yaml",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        "--rft_rounds",
        "2",
        "--rft_prompts_per_round",
        "4",
        "--rft_samples_per_prompt",
        "2",
        "--rft_max_new_tokens",
        "8",
        "--countdown_validation_size",
        "4",
        "--rft_add_solutions",
        "true",
        "--report_to",
        "none",
    ]
    run(cmd)
    summary = json.loads((out / "run_summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    assert all(
        r["records"] == 4 for r in summary["rounds"][1:]
    )  # the tiny model solves nothing: solutions only
    assert (out / "model.safetensors").is_file() and (out / "round2" / "round.json").is_file()
    proc = run(cmd)  # finished rounds are not run again
    assert "already done" in proc.stdout + proc.stderr
    no_solutions = run(
        [*cmd[:-4], "--output_dir", str(tmp_path / "none"), "--report_to", "none"], check=False
    )
    assert (
        no_solutions.returncode != 0
        and "no verified-correct sample" in no_solutions.stdout + no_solutions.stderr
    )


def test_greedy_anchored_pairs_move_or_keep_the_greedy_answer():
    from posttrain.preferences import greedy_anchored_pair, pairs_from_samples

    prompts = [make_prompt((21, 20, 12), 12, "short")] * 3
    wrong, right, other = (
        "<answer>21 + 20 + 12</answer>",
        "<answer>(21 - 20) * 12</answer>",
        "<answer>x</answer>",
    )
    samples = [[wrong, right, right, other], [right, wrong, other, other], [wrong, wrong, wrong, wrong]]
    rewards = [[0.1, 1.0, 1.0, 0.1], [1.0, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]]
    greedy = [(wrong, 0.1), (right, 1.0), (wrong, 0.1)]
    rows, drops = pairs_from_samples(prompts, samples, rewards, None, None, greedy)
    assert drops == {"dropped_ties": 1, "pairs_dropped_truncated": 0}
    # Greedy wrong: the most frequent right sample over the greedy answer; greedy right: it over the most
    # frequent worse sample (other appears twice, wrong once).
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"], r["pair_kind"]) for r in rows] == [
        (right, wrong, "greedy_rejected"),
        (right, other, "greedy_chosen"),
    ]
    # A better sample that was cut off is never chosen.
    assert greedy_anchored_pair(0.1, [1.0, 0.1], [False, True], [right, wrong]) is None


def test_results_view_shows_the_paired_chain(tmp_path):
    from eval.results import collect_paired

    run = tmp_path / "grpo-countdown"
    run.mkdir()
    (run / "paired.json").write_text(json.dumps(compare_paired([1, 0, 0, 1], [1, 1, 1, 0], n_boot=100)))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "paired.json").write_text("{}")
    rows = collect_paired(tmp_path)
    assert rows == [["grpo-countdown", "4", "0.500", "0.750", "+0.250", rows[0][5], "2/1", "1"]]


def test_guided_rollout_puts_the_greedy_answer_first(tiny_model_dir):
    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from posttrain.models import load_tokenizer

    task = CountdownTask(50, (2, 25, 1), "2 * 25 * 1")
    prompt = make_prompt(task.nums, task.target, "short")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    args = type("A", (), {"max_completion_length": 5, "temperature": 1.0, "top_k": 0, "top_p": 1.0})()
    trainer = type(
        "T",
        (),
        {
            "processing_class": tokenizer,
            "args": args,
            "model_wrapped": model,
            "accelerator": Accelerator(cpu=True),
        },
    )()
    rollout = GuidedRollout(
        {prompt_key(prompt): (50, [2, 25, 1], "2 * 25 * 1")}, num_generations=3, greedy=True, solutions=False
    )
    torch.manual_seed(1)
    first = rollout([prompt] * 3, trainer)["completion_ids"][0]
    torch.manual_seed(2)
    again = rollout([prompt] * 3, trainer)["completion_ids"][0]
    assert first == again  # greedy: the same answer whatever the sampling seed
    assert rollout.stats == {"groups": 2, "guided": 0, "greedy_right": 0}


def _winrate_run(folder: Path, rewards: list[float], kind: str = "verifiable") -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"judge": {"kind": kind, "model": "j"}}))
    rows = [{"prompt_id": f"p{i}", "policy_reward": r} for i, r in enumerate(rewards)]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_paired_correctness_of_two_win_rate_runs_with_the_verifiable_judge(tmp_path):
    before = _winrate_run(tmp_path / "a", [1.0, 0.0, -1.0, 0.8, 0.0])
    after = _winrate_run(tmp_path / "b", [0.6, 1.0, 0.0, -1.0, 1.0])
    result = compare_dirs(before, after)
    # right before: p0, p3 (2/5); after: p0, p1, p4 (3/5); gained p1, p4; lost p3.
    assert (result["before"], result["after"], result["gained"], result["lost"]) == (0.4, 0.6, 2, 1)
    assert result["p_mcnemar"] == 1.0
    rm_judged = _winrate_run(tmp_path / "c", [1.0] * 5, kind="reward-model")
    with pytest.raises(ValueError, match="not the verifiable judge"):
        compare_dirs(before, rm_judged)

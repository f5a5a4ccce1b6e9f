"""eval.test_time: best-of-N and first-verified estimators against brute force, picks, and the CLI end to end."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval import test_time as tt
from eval.countdown import pass_at_k
from eval.results import collect
from posttrain.countdown import CountdownTask

TASK = CountdownTask(target=21, nums=(17, 19, 2), solution="")
RIGHT = "<answer>(19 * 2) - 17</answer>"
WRONG = "<answer>(17 - 19) * 2</answer>"
NO_ANSWER = "I think it is 21"


def brute_force_best_of_n(scores, correct, n):
    subsets = list(itertools.combinations(range(len(scores)), n))
    return sum(correct[tt.pick_best(scores, s)] for s in subsets) / len(subsets)


# ---------------------------------------------------------------------------------------------------------
# Picks and estimators
# ---------------------------------------------------------------------------------------------------------


def test_pick_best_prefers_highest_score_then_lowest_index():
    assert tt.pick_best([0.2, 0.9, 0.9, 0.1]) == 1
    assert tt.pick_best([0.5, 0.5]) == 0
    assert tt.pick_best([0.5, 0.7, 0.7], indices=[2, 0]) == 2


def test_best_of_n_hand_computed():
    # Scores 0.9 (wrong), 0.5 (right), 0.1 (wrong); best-of-2 is right only in the subset {right, low}: 1 of 3.
    assert tt.best_of_n_expected([0.9, 0.5, 0.1], [False, True, False], 2) == pytest.approx(1 / 3)
    assert tt.best_of_n_expected([0.9, 0.5, 0.1], [False, True, False], 1) == pytest.approx(1 / 3)
    assert tt.best_of_n_expected([0.9, 0.5, 0.1], [False, True, False], 3) == 0.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.booleans()), min_size=1, max_size=8),
    st.data(),
)
def test_best_of_n_matches_brute_force_with_ties(pairs, data):
    scores = [s for s, _ in pairs]
    correct = [c for _, c in pairs]
    n = data.draw(st.integers(1, len(pairs)))
    assert tt.best_of_n_expected(scores, correct, n) == pytest.approx(
        brute_force_best_of_n(scores, correct, n)
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=12), st.data())
def test_best_of_n_with_a_complete_verifier_is_pass_at_n(correct, data):
    n = data.draw(st.integers(1, len(correct)))
    scores = [1.0 if c else 0.0 for c in correct]
    assert tt.best_of_n_expected(scores, correct, n) == pytest.approx(
        pass_at_k(len(correct), sum(correct), n)
    )


def test_best_of_n_rejects_bad_n():
    with pytest.raises(ValueError, match="1 <= n <= 2"):
        tt.best_of_n_expected([1.0, 0.0], [True, False], 3)


def exact_first_verified_rule(m, c, budget, chunk):
    """Rule verifier: accuracy is pass@budget; samples drawn = sum over chunks of P(all earlier wrong)."""
    drawn = sum(chunk * math.comb(m - c, j * chunk) / math.comb(m, j * chunk) for j in range(budget // chunk))
    return pass_at_k(m, c, budget), drawn


@pytest.mark.parametrize(
    ("m", "c", "budget", "chunk"), [(8, 0, 8, 2), (8, 1, 8, 2), (8, 3, 4, 1), (16, 5, 16, 4)]
)
def test_first_verified_matches_the_closed_form_for_the_rule_verifier(m, c, budget, chunk):
    correct = [True] * c + [False] * (m - c)
    random.Random(m * 31 + c).shuffle(correct)
    scores = [1.0 if x else 0.0 for x in correct]
    fv = tt.first_verified_expected(
        scores, 1.0, correct, [10] * m, [0] * m, budget=budget, chunk=chunk, orderings=4000, seed=1
    )
    accuracy, drawn = exact_first_verified_rule(m, c, budget, chunk)
    assert fv.accuracy == pytest.approx(accuracy, abs=0.03)
    assert fv.samples == pytest.approx(drawn, abs=0.1)
    assert fv.tokens == pytest.approx(10 * fv.samples)
    assert fv.verifier_tokens == 0


def test_first_verified_falls_back_to_the_best_drawn_and_is_seeded():
    # Nothing accepted: the pick is the best-scored drawn sample; all of the budget is drawn.
    fv = tt.first_verified_expected([0.4, 0.2], 0.5, [True, False], [3, 5], [7, 7], budget=2, chunk=1)
    assert (fv.accuracy, fv.samples, fv.tokens, fv.verifier_tokens) == (1.0, 2.0, 8.0, 14.0)
    args = ([0.9, 0.1, 0.6], 0.5, [False, True, True], [1, 2, 3], [0, 0, 0])
    assert tt.first_verified_expected(*args, budget=3, chunk=1, seed=5) == tt.first_verified_expected(
        *args, budget=3, chunk=1, seed=5
    )
    with pytest.raises(ValueError, match="chunk <= budget"):
        tt.first_verified_expected(*args, budget=2, chunk=3)


def test_curve_points():
    assert tt.curve_points(1) == [1]
    assert tt.curve_points(16) == [1, 2, 4, 8, 16]
    assert tt.curve_points(12) == [1, 2, 4, 8, 12]


def test_rule_verifier_reads_the_puzzle_only():
    wrong_solution_recorded = CountdownTask(
        target=21, nums=(17, 19, 2), solution="17 + 19 - 2"
    )  # not a solution
    verdicts = tt.rule_verifier([wrong_solution_recorded], [[RIGHT, WRONG, NO_ANSWER]])
    assert verdicts.scores == [[1.0, 0.0, 0.0]]
    assert verdicts.accepted(0, 0) and not verdicts.accepted(0, 1)


def test_unknown_verifier_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"valid names: \['genrm', 'rule'\]"):
        tt.run_verifier("oracle", [TASK], [[RIGHT]], {})


# ---------------------------------------------------------------------------------------------------------
# Samples and the curve
# ---------------------------------------------------------------------------------------------------------


class WordTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def rows_for(completions_per_task, tasks=(TASK,)):
    return [
        {
            "task_index": i,
            "sample_index": j,
            "task": {"target": t.target, "nums": list(t.nums)},
            "completion": c,
        }
        for i, (t, comps) in enumerate(zip(tasks, completions_per_task, strict=True))
        for j, c in enumerate(comps)
    ]


def test_sample_set_groups_rows_and_counts_tokens():
    rows = rows_for([[WRONG, RIGHT]])[::-1]  # out of order on purpose
    samples = tt.sample_set_from_rows(rows, WordTokenizer())
    assert samples.candidates == [[WRONG, RIGHT]]
    assert samples.correct == [[False, True]]
    assert samples.tokens == [[len(WRONG.split()) + 1, len(RIGHT.split()) + 1]]


def test_sample_set_errors_name_the_problem():
    with pytest.raises(ValueError, match="missing field 'completion'"):
        tt.sample_set_from_rows([{"task_index": 0, "sample_index": 0, "task": {}}], WordTokenizer())
    uneven = rows_for([[RIGHT, WRONG], [RIGHT]], tasks=(TASK, TASK))
    with pytest.raises(ValueError, match="different numbers of samples"):
        tt.sample_set_from_rows(uneven, WordTokenizer())


def test_base_template_seed_is_part_of_what_the_model_said():
    assert tt.said("...<think>", " 2 + 2</think> <answer>4</answer>").startswith("<think>")
    assert tt.said([{"role": "user", "content": "x<think>"}], "y") == "y"


def test_curve_oracle_equals_rule_best_of_n():
    samples = tt.sample_set_from_rows(rows_for([[WRONG, RIGHT, NO_ANSWER, WRONG]]), WordTokenizer())
    run = tt.analyse(samples, ["rule"], {"seed": 0}, chunk=2, orderings=200)
    for row in run["curve"]:
        assert row["best_of_n"]["rule"]["accuracy"] == pytest.approx(row["oracle_pass_at_n"])
        assert row["first_verified"]["rule"]["accuracy"] == pytest.approx(row["oracle_pass_at_n"], abs=0.08)
    assert [r["n"] for r in run["curve"]] == [1, 2, 4]
    assert run["curve"][0]["oracle_pass_at_n"] == pytest.approx(0.25)
    assert run["verifier_report"]["rule"] == {"auroc": 1.0, "accepted_share": 0.25, "verifier_tokens": 0}
    assert run["per_task"][0]["picks"]["rule"] == {
        "sample_index": 1,
        "completion": RIGHT,
        "score": 1.0,
        "correct": True,
    }
    # first-verified draws fewer samples than best-of-4 spends
    assert run["curve"][-1]["first_verified"]["rule"]["samples_per_task"] < 4


# ---------------------------------------------------------------------------------------------------------
# Live strategies and the CLI
# ---------------------------------------------------------------------------------------------------------


def test_first_verified_live_stops_tasks_at_their_first_accepted_chunk(monkeypatch):
    easy = CountdownTask(target=21, nums=(17, 19, 2), solution="")
    hard = CountdownTask(target=99, nums=(1, 2, 3), solution="")
    calls = []

    def scripted_generate(model, prompts, params, tokenizer=None, progress=True):
        calls.append(len(prompts))
        return [[RIGHT if "Target: 21" in str(p) else WRONG] * params.n for p in prompts]

    monkeypatch.setattr(tt, "generate", scripted_generate)
    params = tt.SamplingParams(max_new_tokens=8, temperature=1.0, n=6)
    picks = tt.run_first_verified_live(
        None,
        WordTokenizer(),
        [easy, hard],
        template="short",
        params=params,
        chunk=2,
        verifier="rule",
        options={},
    )
    assert calls == [2, 1, 1]  # the solved task leaves after the first chunk
    assert [p["samples_drawn"] for p in picks] == [2, 6]
    assert [p["correct"] for p in picks] == [True, False]
    assert [p["verified"] for p in picks] == [True, False]
    summary = tt._live_summary(picks, 6, None)
    assert summary["samples_saved_share"] == pytest.approx(1 - 4 / 6)


@pytest.mark.parametrize("strategy", ["curve", "best_of_n", "first_verified"])
def test_cli_end_to_end_on_a_tiny_model(tiny_model_dir, tmp_path, strategy):
    out = tmp_path / strategy
    summary = tt.main(
        ["--model", str(tiny_model_dir), "--strategy", strategy, "--n", "4", "--chunk", "2", "--n_tasks", "3",
         "--max_new_tokens", "4", "--template", "short", "--orderings", "20", "--output_dir", str(out),
         "--no_progress"]
    )  # fmt: skip
    saved = json.loads((out / "summary.json").read_text())
    assert saved["runs"].keys() == {"t1"} and saved == json.loads(json.dumps(summary))
    assert 0.0 <= saved["greedy_accuracy"] <= 1.0
    if strategy == "curve":
        assert [r["n"] for r in saved["runs"]["t1"]["curve"]] == [1, 2, 4]
        assert (out / "accuracy_vs_compute.png").stat().st_size > 0
        assert len((out / "per_task-t1.jsonl").read_text().splitlines()) == 3
    else:
        picks = (out / "picks-t1.jsonl").read_text().splitlines()
        assert len(picks) == 3
        assert all(1 <= json.loads(p)["samples_drawn"] <= 4 for p in picks)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "exactly one of --model"),
        (["--model", "m", "--samples", "s"], "exactly one of --model"),
        (["--samples", "s", "--strategy", "first_verified"], "samples as it goes"),
        (["--model", "m", "--verifier", "oracle"], "unknown --verifier 'oracle'"),
        (["--model", "m", "--verifier", "genrm"], "needs --genrm_model"),
        (["--model", "m", "--n", "2", "--chunk", "4"], "--chunk"),
        (["--model", "m", "--temperatures", "0"], "must be > 0"),
    ],
)
def test_cli_rejects_bad_arguments_before_loading(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        tt.main(argv)
    assert message in str(info.value)


def test_cli_reanalyses_an_earlier_samples_file(tmp_path, tiny_model_dir):
    samples_dir = tmp_path / "samples"
    samples_dir.mkdir()
    (samples_dir / "samples.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows_for([[WRONG, RIGHT]]))
    )
    (samples_dir / "summary.json").write_text(json.dumps({"model": str(tiny_model_dir)}))
    summary = tt.main(["--samples", str(samples_dir / "samples.jsonl"), "--n", "2", "--chunk", "1",
                       "--output_dir", str(tmp_path / "out"), "--no_progress"])  # fmt: skip
    curve = summary["runs"]["samples"]["curve"]
    assert [r["best_of_n"]["rule"]["accuracy"] for r in curve] == [0.5, 1.0]
    # The results view shows the curve's largest N per strategy and verifier.
    rows, _ = collect(tmp_path / "out")
    assert [(r.metric, r.value, r.n) for r in rows] == [
        ("best-of-2 (rule)", 1.0, 1),
        ("first-verified@2 (rule)", 1.0, 1),
    ]


def test_curve_with_the_genrm_verifier_on_a_tiny_model(tiny_model_dir, tmp_path):
    out = tmp_path / "genrm"
    summary = tt.main(
        ["--model", str(tiny_model_dir), "--n", "2", "--chunk", "1", "--n_tasks", "2", "--max_new_tokens", "4",
         "--template", "short", "--orderings", "10", "--no_greedy", "--verifier", "rule", "genrm",
         "--genrm_model", str(tiny_model_dir), "--genrm_k_min", "1", "--genrm_k_max", "2", "--genrm_chunk", "1",
         "--output_dir", str(out), "--no_progress"]
    )  # fmt: skip
    last = summary["runs"]["t1"]["curve"][-1]
    assert set(last["best_of_n"]) == {"rule", "genrm"}
    assert 0.0 <= last["best_of_n"]["genrm"]["accuracy"] <= last["oracle_pass_at_n"] + 1e-9
    picks = [
        json.loads(line)["picks"]["genrm"] for line in (out / "per_task-t1.jsonl").read_text().splitlines()
    ]
    assert all(0.0 <= p["score"] <= 1.0 for p in picks)

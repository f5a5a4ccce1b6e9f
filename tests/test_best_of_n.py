"""Best-of-N: the pick rule, the judge pick in eval.winrate against a real 127.0.0.1 reward server with scripted
scores, the Countdown rule-verifier and judge picks in eval.submit, the metadata schema, and the bad options."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

import eval.winrate as winrate
from eval.best_of_n import check_best_of, pick_countdown, pick_index
from eval.reward_client import RewardClient
from eval.reward_server import RewardServer
from eval.submit import build_submission, validate_submission
from eval.submit import main as submit_main
from posttrain.sampling import SamplingParams
from tests.conftest import submission_metadata

# The summary keys of a plain run, as they were before best-of-N existed: BEST_OF=1 must not change them.
PLAIN_SUMMARY_KEYS = [
    "task", "model", "model_revision", "model_commit", "model_fingerprint", "reference", "reference_revision",
    "reference_commit", "reference_fingerprint", "sampling", "seed", "backend", "reward_model", "git_commit",
    "reference_fallback", "reward_endpoint", "judge", "judge_probes", "prompt_source", "n_prompts", "n_scored",
    "n_failed", "wins", "losses", "ties", "win_rate", "win_rate_ci95", "win_rate_ties_half", "sign_test_p",
    "mean_policy_reward", "mean_reference_reward", "length_controlled_win_rate", "length_effect",
    "length_matched_win_rate", "length_matched_n", "lengths", "length_control", "truncated", "max_reward_tokens",
    "reward_token_margin", "count_tokenizer", "requests", "generations_reused", "generation_seconds",
    "scoring_seconds", "wall_time_s", "timestamp", "results_path", "failed",
]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# The pick rule and the options
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores, expected",
    [
        ([0.1, 0.5, 0.3], 1),
        ([0.5, 0.5, 0.2], 0),  # a tie goes to the lowest index
        ([0.2, 0.7, 0.7], 1),
        ([None, 0.3, None, 0.3], 1),  # a failed score is never picked
        ([None, -5.0], 1),  # whatever a scored candidate's value
        ([None, None], None),  # all failed: nothing to pick
        ([], None),
        ([-1.0, -1.0, -1.0], 0),
    ],
)
def test_pick_index_highest_lowest_index_on_ties_never_a_failure(scores, expected):
    assert pick_index(scores) == expected


@pytest.mark.parametrize(
    "n, temperature, fragment",
    [
        (0, 0.7, "--best_of must be an integer >= 1"),
        (-2, 0.7, "--best_of must be an integer >= 1"),
        (True, 0.7, "--best_of must be an integer >= 1"),
        (4, 0.0, "--best_of_temperature must be a finite number > 0"),
        (2, -1.0, "--best_of_temperature"),
        (2, float("nan"), "--best_of_temperature"),
    ],
)
def test_check_best_of_names_the_option(n, temperature, fragment):
    with pytest.raises(ValueError, match=fragment):
        check_best_of(n, temperature)


def test_best_of_one_needs_no_temperature():
    check_best_of(1, 0.0)  # greedy plain runs stay valid


def test_pick_countdown_reads_only_numbers_and_target():
    tasks = [{"target": 10, "nums": [2, 5, 3]}, {"target": 7, "nums": [3, 4]}]
    candidates = [
        ["<answer>2*5+3</answer>", "<answer>2+5+3</answer>", "<answer>3+5+2</answer>"],
        ["no answer", "<answer>3*4</answer>"],
    ]
    picks = pick_countdown(tasks, candidates)
    assert picks.responses == ["<answer>2+5+3</answer>", "no answer"]
    assert [r["chosen"] for r in picks.records] == [1, 0]
    assert [r["verified"] for r in picks.records] == [True, False]
    assert picks.records[0]["accepted"] == [False, True, True]


# ----------------------------------------------------------------------------------------------------------
# eval.winrate against a real reward server on 127.0.0.1 with scripted scores
# ----------------------------------------------------------------------------------------------------------


class _Reply:
    """What the scripted scorer encodes: the reply, one "token" long."""

    def __init__(self, reply: str):
        self.reply = reply

    def __len__(self) -> int:
        return 1


class ScriptedScorer:
    """An `eval.reward_server.Scorer`: a reply scores the number of times it says GOOD; a reply that says
    UNSCORABLE is refused (HTTP 400, a failed item). Records every reply it was asked about, in order."""

    served_model_name = "scripted-judge"
    max_length = 4096
    path = "scripted"

    def __init__(self):
        self.asked: list[str] = []

    def encode(self, messages):
        reply = messages[-1]["content"]
        self.asked.append(reply)
        if "UNSCORABLE" in reply:
            raise ValueError("this reply cannot be scored")
        return _Reply(reply)

    def score_ids(self, batch: Sequence[_Reply]) -> list[float]:
        return [float(item.reply.count("GOOD")) for item in batch]


PROMPTS = ["question 0", "question 1", "question 2", "question 3"]
CANDIDATES = [
    ["plain", "GOOD GOOD", "GOOD GOOD"],  # a tie: the first of the two
    ["UNSCORABLE GOOD GOOD GOOD", "plain", "GOOD"],  # the failed one is never picked
    ["UNSCORABLE a", "UNSCORABLE b", "UNSCORABLE c"],  # none scored: candidate 0 kept, flagged
    ["same", "same", "same"],  # one distinct conversation
]


def _scripted_generate(calls: list, scorer: ScriptedScorer | None = None):
    def fake_generate(model, conversations, params, **kwargs):
        calls.append((params, len(scorer.asked) if scorer else None))
        if params.n == 1:
            return [["GOOD"] for _ in conversations]  # the reference: one GOOD everywhere
        return [list(CANDIDATES[PROMPTS.index(c[0]["content"])]) for c in conversations]

    return fake_generate


def _run(server, scorer, tmp_path, tiny_model_dir, **kwargs):
    client = RewardClient(
        server.url, scorer.served_model_name, cache_path=tmp_path / "c.jsonl", max_retries=0
    )
    return winrate.evaluate_winrate(
        model=str(tiny_model_dir),
        reference=str(tiny_model_dir),
        prompts=PROMPTS,
        prompt_source={"test": True},
        client=client,
        params=SamplingParams(max_new_tokens=4, seed=5),
        output_dir=tmp_path / "out",
        backend="hf",
        concurrency=4,
        max_reward_tokens=1024,
        progress=False,
        print_table=False,
        **kwargs,
    )


def test_winrate_best_of_picks_the_judges_best(tmp_path, tiny_model_dir, monkeypatch):
    scorer = ScriptedScorer()
    calls: list = []
    monkeypatch.setattr(winrate, "generate", _scripted_generate(calls, scorer))
    with RewardServer(scorer, port=0) as server:
        first = _run(server, scorer, tmp_path, tiny_model_dir, best_of=3, best_of_temperature=0.9)
        second = _run(server, scorer, tmp_path, tiny_model_dir, best_of=3, best_of_temperature=0.9)

    # The judge probes ran first (every probe conversation asked before anything was generated).
    policy_call, reference_call = calls[0], calls[1]
    assert policy_call[1] >= 15 and first["judge_probes"]["total"] == 15
    # The candidates: N samples at the best-of temperature with the run's seed; the reference as usual.
    assert (policy_call[0].n, policy_call[0].temperature, policy_call[0].seed) == (3, 0.9, 5)
    assert (reference_call[0].n, reference_call[0].temperature) == (1, 0.0)

    block = first["best_of"]
    assert block["n"] == 3 and block["temperature"] == 0.9 and block["picked_by"] == "judge"
    assert block["candidates"] == 12 and block["distinct_candidates"] == 9
    assert (block["candidates_scored"], block["candidates_failed"]) == (8, 4)
    assert block["prompts_all_failed"] == [2] and block["n_prompts_all_failed"] == 1
    assert block["mean_chosen_score"] == pytest.approx((2 + 1 + 0) / 3)
    assert block["mean_candidate_score"] == pytest.approx((4 / 3 + 0.5 + 0) / 3)
    assert block["requests"]["requests"] == 9  # one per distinct conversation, failures not retried (400)

    rows = [json.loads(line) for line in (tmp_path / "out" / "best_of.jsonl").read_text().splitlines()]
    assert [r["chosen"] for r in rows] == [1, 2, 0, 0]
    assert [r["all_failed"] for r in rows] == [False, False, True, False]
    assert rows[1]["scores"] == [None, 0.0, 1.0] and set(rows[1]["errors"]) == {"0"}
    assert rows[0]["candidates"] == CANDIDATES[0] and rows[0]["prompt_id"] == winrate.prompt_id(PROMPTS[0])

    # The picked answers go through the ordinary comparison; the unscored prompt fails there too (listed).
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["policy_response"] for r in results] == ["GOOD GOOD", "GOOD", "UNSCORABLE a", "same"]
    assert [r["outcome"] for r in results] == ["win", "tie", "failed", "loss"]
    assert results[0]["run"]["best_of"] == {"n": 3, "temperature": 0.9}
    assert first["sampling"]["temperature"] == 0.0 and first["n_failed"] == 1

    # The re-run reuses the candidates and every score; only the failed ones are asked again.
    assert second["generations_reused"] == {"policy": True, "reference": True} and len(calls) == 2
    assert second["best_of"]["requests"]["requests"] == 4 and second["best_of"]["requests"]["cache_hits"] == 5
    assert second["best_of"]["prompts_all_failed"] == [2]


def test_winrate_best_of_one_is_the_plain_run(tmp_path, tiny_model_dir, monkeypatch):
    scorer = ScriptedScorer()
    calls: list = []
    monkeypatch.setattr(winrate, "generate", _scripted_generate(calls))
    with RewardServer(scorer, port=0) as server:
        summary = _run(server, scorer, tmp_path, tiny_model_dir, run_judge_probes=False)
    assert list(summary) == PLAIN_SUMMARY_KEYS
    assert all(params.n == 1 for params, _ in calls)
    assert not (tmp_path / "out" / "best_of.jsonl").exists()
    row = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])
    assert "best_of" not in row["run"]
    # The generation cache keeps its one-string-per-prompt form.
    for path in (tmp_path / "out" / "generations").iterdir():
        assert all(isinstance(r, str) for r in json.loads(path.read_text())["responses"])


def test_winrate_cli_best_of_with_real_sampling_and_the_verifiable_judge(tmp_path, tiny_model_dir):
    summary = winrate.main(
        [
            *("--model", str(tiny_model_dir), "--reference", str(tiny_model_dir), "--prompts", "fixture"),
            *("--n_prompts", "2", "--max_new_tokens", "4", "--backend", "hf", "--serve_judge", "verifiable"),
            *("--best_of", "3", "--best_of_temperature", "1.0", "--output_dir", str(tmp_path / "out")),
            *("--reward_cache", str(tmp_path / "c.jsonl"), "--no_progress"),
        ]
    )
    block = summary["best_of"]
    assert block["candidates"] == block["candidates_scored"] == 6 and block["prompts_all_failed"] == []
    rows = [json.loads(line) for line in (tmp_path / "out" / "best_of.jsonl").read_text().splitlines()]
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    for row, result in zip(rows, results, strict=True):
        assert len(row["candidates"]) == 3 and row["chosen"] == pick_index(row["scores"])
        assert result["policy_response"] == row["candidates"][row["chosen"]]
    assert summary["judge"]["kind"] == "verifiable" and summary["judge_probes"]["passed"] == 15


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--best_of", "0"], "--best_of must be an integer >= 1"),
        (["--best_of", "3", "--best_of_temperature", "0"], "--best_of_temperature must be"),
        (["--best_of_serve_rm", "runs/rm"], "add --best_of N"),
    ],
)
def test_winrate_cli_bad_best_of_options(argv, fragment):
    with pytest.raises(SystemExit) as exc:
        winrate.main(argv)
    assert str(exc.value).startswith("error: ") and fragment in str(exc.value)


# ----------------------------------------------------------------------------------------------------------
# eval.submit
# ----------------------------------------------------------------------------------------------------------


def test_submission_countdown_best_of_uses_the_rule_verifier(tmp_path, tiny_model_dir, monkeypatch):
    import posttrain.sampling

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        '{"id": "a", "target": 10, "nums": [2, 5, 3]}\n{"id": "b", "target": 7, "nums": [3, 4]}\n'
    )
    scripted = [
        ["<answer>2*5+3</answer>", "<answer>2+5+3</answer>", "<answer>5+3+2</answer>"],
        ["I give up", "<answer>3*4</answer>", "<answer>4-3</answer>"],
    ]
    seen = []

    def fake_generate(model, prompts, params, **kwargs):
        seen.append(params)
        return [list(c) for c in scripted[: len(prompts)]]

    monkeypatch.setattr(posttrain.sampling, "generate", fake_generate)
    data = build_submission(
        model=str(tiny_model_dir),
        method="grpo",
        tasks=["countdown"],
        countdown_prompts=str(tasks),
        countdown_max_new_tokens=8,
        params=SamplingParams(seed=3),
        backend="hf",
        progress=False,
        best_of=3,
        best_of_temperature=0.8,
    )
    assert (seen[0].n, seen[0].temperature, seen[0].seed) == (3, 0.8, 3)
    assert [i["completion"] for i in data["countdown"]["items"]] == ["<answer>2+5+3</answer>", "I give up"]
    meta = data["metadata"]
    assert meta["best_of"] == {
        "n": 3,
        "temperature": 0.8,
        "countdown_verifier": "rule",
        "countdown_verified": 1,
    }
    assert meta["sampling"]["n"] == 1 and meta["sampling"]["temperature"] == 0.0
    validate_submission(data)


def test_submission_ultrafeedback_best_of_through_a_judge_endpoint(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    import posttrain.sampling

    secret = "judge-key-do-not-leak"
    monkeypatch.setenv("REWARD_API_KEY", secret)

    def fake_generate(model, prompts, params, **kwargs):
        return [["plain", "GOOD GOOD", "GOOD"][: params.n] for _ in prompts]

    monkeypatch.setattr(posttrain.sampling, "generate", fake_generate)
    scorer = ScriptedScorer()
    with RewardServer(scorer, port=0, api_key=secret) as server:
        path = submit_main(
            [
                *("--model", str(tiny_model_dir), "--method", "dpo", "--tasks", "ultrafeedback"),
                *("--ultrafeedback_prompts", "fixture", "--ultrafeedback_n", "2", "--backend", "hf"),
                *("--best_of", "3", "--reward_url", server.url, "--reward_cache", ""),
                *("--output_dir", str(tmp_path / "subs"), "--no_progress"),
            ]
        )
        url = server.url
    text = path.read_text()
    data = json.loads(text)
    assert [i["response"] for i in data["ultrafeedback"]["items"]] == ["GOOD GOOD", "GOOD GOOD"]
    assert data["metadata"]["best_of"] == {
        "n": 3,
        "temperature": 0.7,
        "ultrafeedback_judge": f"scripted-judge (reward-model) at {url}",
        "ultrafeedback_unscored": 0,
    }
    validate_submission(data)
    assert secret not in text + capsys.readouterr().out


def test_submission_without_best_of_still_validates(tmp_path, tiny_model_dir):
    data = build_submission(
        model=str(tiny_model_dir),
        method="sft",
        tasks=["countdown"],
        countdown_n=1,
        countdown_max_new_tokens=2,
        backend="hf",
        progress=False,
    )
    assert "best_of" not in data["metadata"]  # a plain submission is what it always was
    validate_submission(data)
    with_block = json.loads(json.dumps(data))
    with_block["metadata"]["best_of"] = {"n": 4, "temperature": 0.7, "countdown_verifier": "rule"}
    validate_submission(with_block)


@pytest.mark.parametrize(
    "block, fragment",
    [
        ({"n": 1, "temperature": 0.7, "countdown_verifier": "rule"}, "metadata.best_of.n"),
        ({"n": 4, "temperature": 0.0, "countdown_verifier": "rule"}, "metadata.best_of.temperature"),
        ({"n": 4, "temperature": 0.7, "countdown_verifier": "genrm"}, "metadata.best_of.countdown_verifier"),
        ({"n": 4, "temperature": 0.7, "countdown_verifier": "rule", "k": 1}, "metadata.best_of.k: unknown"),
        ({"n": 4, "temperature": 0.7}, "a countdown section needs countdown_verifier"),
    ],
)
def test_best_of_metadata_is_strict(tmp_path, tiny_model_dir, block, fragment):
    from eval.submit import SubmissionError

    data = {
        "schema_version": 1,
        "metadata": submission_metadata() | {"best_of": block},
        "countdown": {
            "prompt_source": {"heldout": True},
            "template": "chat",
            "items": [{"id": "a", "target": 3, "nums": [1, 2], "prompt": "p", "completion": "c"}],
        },
    }
    with pytest.raises(SubmissionError, match=fragment.replace(".", r"\.")):
        validate_submission(data)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--best_of", "2"], "--best_of N > 1 on ultrafeedback needs a judge"),
        (["--serve_judge", "verifiable"], "--serve_judge names the judge"),
        (["--best_of", "0"], "--best_of must be an integer >= 1"),
        (["--best_of", "3", "--best_of_temperature", "0", "--tasks", "countdown"], "--best_of_temperature"),
    ],
)
def test_submit_cli_bad_best_of_options(tmp_path, capsys, extra, fragment):
    with pytest.raises(SystemExit) as exc:
        submit_main(["--method", "sft", "--output_dir", str(tmp_path), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err
    assert not list(tmp_path.iterdir())  # stopped before anything was built


def test_submission_best_of_with_the_judge_served_in_process(tmp_path, tiny_model_dir, monkeypatch):
    import posttrain.sampling

    monkeypatch.setattr(
        posttrain.sampling,
        "generate",
        lambda model, prompts, params, **kw: [["x"] * params.n for _ in prompts],
    )
    path = submit_main(
        [
            *("--model", str(tiny_model_dir), "--method", "dpo", "--tasks", "ultrafeedback,countdown"),
            *("--ultrafeedback_prompts", "fixture", "--ultrafeedback_n", "2", "--countdown_n", "2"),
            *("--best_of", "2", "--serve_judge", "verifiable", "--reward_cache", "", "--backend", "hf"),
            *("--output_dir", str(tmp_path), "--no_progress"),
        ]
    )
    best_of = json.loads(path.read_text())["metadata"]["best_of"]
    assert best_of["ultrafeedback_judge"] == "verifiable-judge-v1 (verifiable, served in process)"
    assert best_of["countdown_verifier"] == "rule" and best_of["countdown_verified"] == 0
    assert best_of["ultrafeedback_unscored"] == 0


class LengthScorer(ScriptedScorer):
    """A picker that prefers longer replies (score = characters), whatever they say."""

    served_model_name = "length-picker"

    def score_ids(self, batch: Sequence[_Reply]) -> list[float]:
        return [float(len(item.reply)) for item in batch]


def test_winrate_best_of_with_a_separate_picker(tmp_path, tiny_model_dir, monkeypatch):
    judge, picker = ScriptedScorer(), LengthScorer()
    monkeypatch.setattr(winrate, "generate", _scripted_generate([]))
    with RewardServer(judge, port=0) as judge_server, RewardServer(picker, port=0) as picker_server:
        picker_client = RewardClient(picker_server.url, picker.served_model_name, max_retries=0)
        summary = _run(
            judge_server, judge, tmp_path, tiny_model_dir, best_of=3, best_of_temperature=0.9,
            run_judge_probes=False, picker=picker_client, picker_max_tokens=1024,
            picker_description={"model": "length-picker"},
        )  # fmt: skip
    # The picker chose the longest scorable candidate (ties: the first); the judge would have taken "GOOD" at
    # prompt 1. The judge scored the picks and the references only, never the other candidates.
    rows = [json.loads(line) for line in (tmp_path / "out" / "best_of.jsonl").read_text().splitlines()]
    assert [r["chosen"] for r in rows] == [1, 1, 0, 0]
    assert rows[1]["scores"] == [None, 5.0, 4.0]
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["policy_response"] for r in results] == ["GOOD GOOD", "plain", "UNSCORABLE a", "same"]
    assert [r["outcome"] for r in results] == ["win", "loss", "failed", "loss"]
    assert "UNSCORABLE GOOD GOOD GOOD" not in judge.asked and "UNSCORABLE GOOD GOOD GOOD" in picker.asked
    assert summary["best_of"]["picked_by"] == "picker"
    assert summary["best_of"]["picker"] == {"model": "length-picker"}

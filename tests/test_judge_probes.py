"""Judge sanity probes: the probe set, biased judges caught and a knowing one passed, errors kept apart from
failures, the judge description, and the CLI on a local reward model and through the reward endpoint."""

from __future__ import annotations

import json
import re
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.judge_probes import (
    KINDS,
    Probe,
    build_probes,
    describe_judge,
    is_sentence,
    main,
    pick_prompts,
    run_probes,
    task_family,
    warning_panel,
)
from eval.reward_client import ScoreResult


def reply(conv):
    return conv[-1]["content"]


def longer_wins(convs):
    return [float(len(reply(c))) for c in convs]


def shorter_wins(convs):
    return [-float(len(reply(c))) for c in convs]


def ignores_reply(convs):
    return [float(len(c[0]["content"])) for c in convs]  # depends on the prompt only


@pytest.fixture(scope="module")
def probes():
    return build_probes()


def knowing_judge(probes):
    good = {(p.prompt, p.good) for p in probes}
    return lambda convs: [1.0 if (c[0]["content"], reply(c)) in good else 0.0 for c in convs]


# ----------------------------------------------------------------------------------------------------------
# The probe set
# ----------------------------------------------------------------------------------------------------------


def test_probe_set_shape(probes):
    assert 12 <= len(probes) <= 16 and build_probes() == probes  # fixed, deterministic
    assert [p.kind for p in probes] == [k for k in KINDS for _ in range(3)]
    prompts = {p.prompt for p in probes}
    assert len(prompts) >= 6
    goods = {p.prompt: p.good for p in probes}
    for p in probes:
        assert goods[p.prompt] == p.good and is_sentence(p.good) and p.good != p.bad
        if p.kind == "empty":
            assert p.bad == ""
        elif p.kind == "repeated":
            phrase = p.bad.split(". ")[0] + "."
            assert p.bad.count(phrase) >= 10 and p.bad.replace(phrase, "").strip() == ""
        elif p.kind == "off_topic":
            assert len(p.bad.split()) >= 30 and p.bad.rstrip().endswith(".")
        elif p.kind == "other_answer":
            others = [prompt for prompt, good in goods.items() if good == p.bad]
            assert others and p.prompt not in others  # another probe prompt's right answer
        elif p.kind == "countdown":
            assert re.fullmatch(r"<answer>[\d\s()+\-*/]+</answer>", p.bad)
    # The prompts come from the fixture's test split, one per task family first.
    from posttrain.chat_fixture import ultrafeedback_fixture_rows

    test_prompts = {r["prompt"] for r in ultrafeedback_fixture_rows("test_prefs")}
    assert prompts <= test_prompts
    families = [task_family(p) for p in dict.fromkeys(p.prompt for p in probes)]
    assert len(set(families)) >= 4


def test_picking_by_family_and_sentence():
    def row(prompt, answer):
        return {
            "prompt": prompt,
            "chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        }

    rows = [
        row("What is the capital of Peru?", "The capital of Peru is Lima."),
        row("What is the capital of Chad?", "The capital of Chad is N'Djamena."),  # same family: later
        row("Write 'sun moon' in capital letters.", "SUN MOON"),  # not a sentence: never
        row("Is 12 even or odd?", "12 is even."),
        row("Is 12 even or odd?", "Twelve is even."),  # a repeated prompt: once
        {"prompt": "No chosen reply", "chosen": []},
        row("Tell me about x.", "word " * 400 + "end."),  # too long: never
    ]
    assert task_family("What is the capital of Peru?") == "what is the capital"
    assert task_family("Reverse the word 'pencil'.") == "reverse the word"
    picked = pick_prompts(rows, n=3)
    assert picked == [
        ("What is the capital of Peru?", "The capital of Peru is Lima."),
        ("Is 12 even or odd?", "12 is even."),
        ("What is the capital of Chad?", "The capital of Chad is N'Djamena."),  # filled in: too few families
    ]
    assert is_sentence("237 is odd.") and not is_sentence("SUN MOON") and not is_sentence("1 + 2 = 3.")
    with pytest.raises(ValueError, match="need 2 or more"):
        build_probes(rows[:1])


# ----------------------------------------------------------------------------------------------------------
# Judges
# ----------------------------------------------------------------------------------------------------------


def test_length_biased_judges_are_caught(probes):
    longer = run_probes(longer_wins, probes)
    assert not longer["ok"] and longer["n_errors"] == 0
    assert longer["by_kind"]["repeated"]["passed"] == 0 and longer["by_kind"]["off_topic"]["passed"] == 0
    assert {f["kind"] for f in longer["failed"]} >= {"repeated", "off_topic"}
    assert longer["passed"] + longer["n_failed"] == longer["total"] == len(probes)
    shorter = run_probes(shorter_wins, probes)
    assert not shorter["ok"] and shorter["by_kind"]["empty"]["passed"] == 0
    failure = next(f for f in shorter["failed"] if f["kind"] == "empty")
    assert failure["good_score"] < failure["bad_score"] == 0.0 and failure["bad_reply"] == ""


def test_a_judge_that_ignores_the_reply_fails_every_probe(probes):
    report = run_probes(ignores_reply, probes)
    assert report["passed"] == 0 and report["n_failed"] == len(probes)  # ties are not passes
    assert all(r["margin"] == 0 for r in report["probes"])


def test_a_judge_that_knows_the_right_replies_passes(probes):
    report = run_probes(knowing_judge(probes), probes)
    assert report["ok"] and report["passed"] == report["total"] == len(probes)
    assert report["failed"] == [] and report["errors"] == [] and warning_panel(report) is None
    assert all(v["passed"] == v["total"] == 3 for v in report["by_kind"].values())


def test_each_distinct_conversation_is_scored_once_in_one_call(probes):
    calls = []

    def judge(convs):
        calls.append(len(convs))
        return longer_wins(convs)

    run_probes(judge, probes)
    distinct = {json.dumps(c) for p in probes for c in p.conversations()}
    assert calls == [len(distinct)] and len(distinct) < 2 * len(probes)  # good replies are shared


def test_unscored_items_are_errors_not_failures(probes):
    knows = knowing_judge(probes)

    def flaky(convs):
        out = []
        for c in convs:
            if reply(c) == "":
                out.append(ScoreResult(score=None, error="HTTP 400: empty content"))
            elif "Arctic" in reply(c):
                out.append(float("nan"))
            else:
                out.append(ScoreResult(score=knows([c])[0]))
        return out

    report = run_probes(flaky, probes)
    empty_or_nan = [p for p in probes if p.bad == "" or "Arctic" in p.bad]
    assert report["n_errors"] == len(empty_or_nan) and report["n_failed"] == 0 and report["ok"]
    assert {e["kind"] for e in report["errors"]} == {"empty", "off_topic"}
    assert any("HTTP 400" in e["error"] for e in report["errors"])
    assert any("not finite" in e["error"] for e in report["errors"])
    assert warning_panel(report) is not None  # still worth a warning
    with pytest.raises(ValueError, match="returned 1 scores"):
        run_probes(lambda convs: [1.0], probes)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40), st.floats(0.01, 100), st.floats(-1e3, 1e3))
def test_verdicts_are_counted_right_and_invariant_to_a_monotone_rescale(values, scale, shift):
    probes = build_probes()

    def judge(convs):
        return [values[zlib.crc32(json.dumps(c).encode()) % len(values)] for c in convs]  # stable per run

    report = run_probes(judge, probes)
    expected = sum(r["good_score"] > r["bad_score"] for r in report["probes"])
    assert report["passed"] == expected and report["passed"] + report["n_failed"] == report["total"]
    rescaled = run_probes(lambda convs: [v * scale + shift for v in judge(convs)], probes)
    verdicts = [r["passed"] for r in report["probes"]]
    # Exact unless the rescale rounds two distinct floats together: only compare well-separated scores.
    for r, s, v in zip(report["probes"], rescaled["probes"], verdicts, strict=True):
        if abs(r["good_score"] - r["bad_score"]) > 1e-6 * (1 + abs(r["good_score"])):
            assert s["passed"] == v


def test_describe_judge_kinds():
    local = "http://127.0.0.1:8000/v1"
    assert describe_judge("verifiable-judge-v1", local)["kind"] == "verifiable"
    listing = [{"id": "rm-abc", "owned_by": "posttrain", "root": "runs/rm/model"}]
    rm = describe_judge("rm-abc", local, listing=listing)
    assert rm["kind"] == "reward-model" and rm["root"] == "runs/rm/model"
    remote = describe_judge("nvidia/x", "https://user:secret@integrate.api.nvidia.com/v1?key=k2")
    assert remote["kind"] == "remote" and remote["base_url"] == "https://integrate.api.nvidia.com/v1"
    assert describe_judge("judge", local)["kind"] is None  # unknown
    assert describe_judge("judge", local, kind="reward-model")["kind"] == "reward-model"
    assert Probe("empty", "q", "a.", "").conversations()[1] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": ""},
    ]


# ----------------------------------------------------------------------------------------------------------
# CLI: a local reward model, and the same model behind the reward endpoint
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory):
    from eval.reward_server import build_tiny_reward_model

    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny-rm"))


def test_cli_on_a_local_reward_model_and_through_the_endpoint(tmp_path, tiny_rm_dir, capsys):
    from eval.reward_server import RewardScorer, RewardServer

    out = tmp_path / "probes.json"
    report = main(["--rm", str(tiny_rm_dir), "--output", str(out)])
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["passed"] == report["passed"] and saved["total"] == 15 and len(saved["probes"]) == 15
    assert saved["judge"]["kind"] == "reward-model" and saved["judge"]["root"] == str(tiny_rm_dir)
    assert "Judge probes" in printed and ("WARNING" in printed) == (
        not report["ok"] or report["n_errors"] > 0
    )
    if report["ok"]:
        assert main(["--rm", str(tiny_rm_dir), "--strict"])["ok"]
    else:  # a random reward model: --strict turns its failures into exit status 1
        with pytest.raises(SystemExit) as info:
            main(["--rm", str(tiny_rm_dir), "--strict"])
        assert info.value.code == 1

    # The same model behind the endpoint, through RewardClient: the same verdicts and (nearly) the same scores.
    scorer = RewardScorer(tiny_rm_dir)
    with RewardServer(scorer, port=0) as server:
        remote = main(["--reward_url", server.url, "--reward_cache", str(tmp_path / "c.jsonl")])
    assert remote["judge"]["model"] == scorer.served_model_name and remote["judge"]["kind"] == "reward-model"
    assert [r["passed"] for r in remote["probes"]] == [r["passed"] for r in report["probes"]]
    for a, b in zip(remote["probes"], report["probes"], strict=True):
        assert a["good_score"] == pytest.approx(b["good_score"], abs=1e-4)
        assert a["bad_score"] == pytest.approx(b["bad_score"], abs=1e-4)


def test_cli_needs_a_judge():
    with pytest.raises(SystemExit):
        main([])
    with pytest.raises(SystemExit, match="error: "):
        main(["--rm", "/no/such/folder"])


def test_table_and_panel_print_prompts_verbatim():
    """Prompts and replies are data: rich markup in them ("[/x]") is shown, never parsed (a parse error would
    crash the run after the probes were paid for)."""
    from rich.console import Console

    from eval.judge_probes import probe_table

    probes = [
        Probe("empty", "What is [/x] in [bold]?", "It is a closing tag.", ""),
        Probe("repeated", "Why?", "Because it is.", "[/z]" * 9),
    ]
    report = run_probes(shorter_wins, probes)
    console = Console(width=120, record=True)
    console.print(probe_table(report, "Judge [/q]"))
    console.print(warning_panel(report, {"model": "m[/a]"}))
    text = console.export_text()
    assert "What is [/x] in [bold]?" in text and "m[/a]" in text and "[/z][/z]" in text

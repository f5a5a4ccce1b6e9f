"""Win rate: the reward parser, statistics, prompt sets, truncation, the cache, an end-to-end run against the
local reward server, and fault injection through a real 127.0.0.1 server."""

from __future__ import annotations

import hashlib
import json
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from eval.reward_client import RewardClient, RewardEndpointError, ScoreCache, cache_key
from eval.winrate import (
    RewardParseError,
    evaluate_winrate,
    generate_responses,
    load_prompt_set,
    main,
    parse_reward,
    pick_auto_reward_model,
    resolve_model_commit,
    truncate_pair,
    wilson_interval,
    win_statistics,
)
from posttrain.sampling import SamplingParams


def completion(content=None, logprobs=None, **extra):
    choice = {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": content}}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice], **extra}


# ----------------------------------------------------------------------------------------------------------
# Parser
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, expected",
    [
        (completion("reward:-25.625"), -25.625),
        (completion("reward:3"), 3.0),
        (completion(" Reward : 1.5e-2 "), 0.015),
        (completion("helpfulness:1.2,reward:0.75,verbosity:0.1"), 0.75),
        # the logprobs form: no content, or empty content
        (completion(None, [{"token": "reward", "logprob": -7.25, "top_logprobs": []}]), -7.25),
        (completion("", [{"token": "reward", "logprob": 2.0, "top_logprobs": []}]), 2.0),
        # unreadable content, readable logprobs: the fallback applies
        (completion("<garbage>", [{"token": "reward", "logprob": 1.25, "top_logprobs": []}]), 1.25),
        # both present: the content wins
        (completion("reward:1.0", [{"token": "reward", "logprob": 9.0, "top_logprobs": []}]), 1.0),
        (completion("reward:+2"), 2.0),
        (completion("reward:.5"), 0.5),
        (completion("reward:-1E+2"), -100.0),
        # a content in another format (no 'reward' key): the logprob is the score
        (completion("score:3", [{"token": "reward", "logprob": 4, "top_logprobs": []}]), 4.0),
    ],
)
def test_parse_reward_documented_shapes(response, expected):
    assert parse_reward(response) == pytest.approx(expected)
    # The same as an openai ChatCompletion object.
    from openai.types.chat import ChatCompletion

    assert parse_reward(ChatCompletion.model_validate(response)) == pytest.approx(expected)


@pytest.mark.parametrize(
    "response, fragment",
    [
        (None, "empty response"),
        ("<html>502 Bad Gateway</html>", "non-JSON body"),
        (b"\x00\x01", "non-JSON body"),
        (42, "expected a chat completion"),
        ({"error": {"message": "model overloaded"}}, "model overloaded"),
        ({"id": "x"}, "no choices"),
        ({"choices": []}, "no choices"),
        ({"choices": ["reward:1"]}, "choices[0]"),
        (completion(None), "neither"),
        (completion("5.0"), "not 'reward:<float>'"),
        (completion("reward:"), "not 'reward:<float>'"),
        (completion("reward:abc"), "not a number"),
        (completion("reward:nan"), "not finite"),
        (completion("reward:inf"), "not finite"),
        (completion("reward:1.0 and more"), "not a number"),
        (completion("helpfulness:3.1,correctness:2.0"), "no 'reward' value"),
        (completion(["reward:1"]), "expected a 'reward:<float>' string"),
        (completion(None, [{"token": "score", "logprob": 1.0}]), "neither"),
        (completion(None, [{"token": "reward", "logprob": None}]), "not a number"),
        (completion(None, [{"token": "reward", "logprob": True}]), "boolean"),
        (completion(None, [{"token": "reward", "logprob": float("nan")}]), "not finite"),
        # strict numbers: what float() would accept but the format does not
        (completion("reward:1,reward:2"), "key 'reward' twice"),
        (completion("Reward:1, reward:2"), "key 'reward' twice"),
        (completion("helpfulness:1,helpfulness:2,reward:3"), "key 'helpfulness' twice"),
        (completion("reward:1_000"), "not a number"),
        (completion("reward:\uff11\uff12"), "not a number"),  # full-width digits
        (completion("reward:\u0662"), "not a number"),  # Arabic-Indic digit
        (completion("reward:0x10"), "not a number"),
        (completion("reward:1e999"), "not finite"),
        (completion(None, [{"token": "reward", "logprob": "5"}]), "not a number"),
        # a content that names a reward but is unreadable: an error, never the logprobs fallback
        (completion("reward:nan", [{"token": "reward", "logprob": 1.0}]), "not finite"),
        (completion("reward:abc", [{"token": "reward", "logprob": 1.0}]), "not a number"),
        (completion("reward:1,reward:2", [{"token": "reward", "logprob": 1.0}]), "twice"),
        (completion("reward:1_0", [{"token": "reward", "logprob": 1.0}]), "not a number"),
    ],
)
def test_parse_reward_malformed_shapes_raise_never_zero(response, fragment):
    with pytest.raises(RewardParseError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        parse_reward(response)


# ----------------------------------------------------------------------------------------------------------
# Statistics, prompts, truncation, cache
# ----------------------------------------------------------------------------------------------------------


def test_wilson_interval_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_load_prompt_set_sources(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n{"prompt": "a"}\n')
    prompts, info = load_prompt_set(str(jsonl))
    assert prompts == ["a", "b"] and info["n_prompts"] == 2 and len(info["sha256"]) == 64
    txt = tmp_path / "p.txt"
    txt.write_text("one\n\ntwo\nthree\n")
    assert load_prompt_set(str(txt), n=2)[0] == ["one", "two"]
    fixture, info = load_prompt_set("fixture", n=5)
    assert len(fixture) == 5 and info["dataset"] == "fixture" and info["split"] == "test_prefs"
    # The hub default falls back to the fixture offline (tests run with HF_HUB_OFFLINE=1).
    assert load_prompt_set(None, n=5)[0] == fixture
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt field"}\n')
    with pytest.raises(ValueError, match="needs a non-empty string 'prompt'"):
        load_prompt_set(str(bad))
    with pytest.raises(ValueError, match="no such file"):
        load_prompt_set("does-not-exist.jsonl")


def test_truncate_pair_fits_budget(tiny_model_dir):
    from posttrain.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    prompt, response = "Tell me a story. " * 3, "Once upon a time " * 100
    p, r, cut = truncate_pair(prompt, response, tok, 60)
    assert cut and p == prompt and response.startswith(r)
    assert len(tok.encode(p, add_special_tokens=False)) + len(tok.encode(r, add_special_tokens=False)) <= 62
    assert truncate_pair("hi", "there", tok, 60) == ("hi", "there", False)
    p, r, cut = truncate_pair("word " * 500, "short answer", tok, 60)  # a huge prompt is cut too
    assert cut and len(tok.encode(p + r, add_special_tokens=False)) <= 64 and r == "short answer"


def test_cache_survives_a_partial_last_line(tmp_path):
    path = tmp_path / "scores.jsonl"
    cache = ScoreCache(path)
    cache.put("k1", "m", 1.5)
    with path.open("a") as handle:
        handle.write('{"key": "k2", "model": "m", "sco')  # a run killed mid-write
    cache = ScoreCache(path)
    assert cache.get("k1") == 1.5 and cache.get("k2") is None
    cache.put("k3", "m", -2.0)
    again = ScoreCache(path)
    assert again.get("k1") == 1.5 and again.get("k3") == -2.0 and len(again) == 2


# ----------------------------------------------------------------------------------------------------------
# End to end against the local reward server
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory) -> Path:
    from eval.reward_server import build_tiny_reward_model

    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny-rm"))


@pytest.fixture(scope="module")
def other_policy_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with perturbed weights: answers that differ from the reference's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    out = tmp_path_factory.mktemp("tiny-policy")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_winrate_end_to_end_against_local_reward_server(
    tmp_path, tiny_model_dir, other_policy_dir, tiny_rm_dir
):
    from eval.reward_server import RewardScorer, RewardServer

    prompts, source = load_prompt_set("fixture", n=6)
    params = SamplingParams(max_new_tokens=8, seed=3)
    scorer = RewardScorer(tiny_rm_dir)
    cache = tmp_path / "cache.jsonl"
    with RewardServer(scorer, port=0) as server:

        def run():
            client = RewardClient(server.url, scorer.served_model_name, cache_path=cache, max_retries=1)
            return evaluate_winrate(
                model=str(other_policy_dir),
                reference=str(tiny_model_dir),
                prompts=prompts,
                prompt_source=source,
                client=client,
                params=params,
                output_dir=tmp_path / "out",
                backend="hf",
                concurrency=4,
                max_reward_tokens=1024,
                progress=False,
                print_table=False,
            )

        first = run()
        second = run()

    assert first["n_prompts"] == 6 and first["n_failed"] == 0 and first["failed"] == []
    assert first["wins"] + first["losses"] + first["ties"] == 6
    assert first["win_rate"] == first["wins"] / 6
    low, high = first["win_rate_ci95"]
    assert low <= first["win_rate"] <= high
    assert first["requests"]["scored"] == first["requests"]["distinct_conversations"] >= 7
    assert first["sampling"]["max_new_tokens"] == 8 and first["seed"] == 3 and "git_commit" in first
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(6))
    # Every line carries the run's provenance (the same as the summary's).
    run_info = rows[0]["run"]
    assert all(r["run"] == run_info for r in rows)
    assert run_info["sampling"] == params.to_dict() and run_info["seed"] == 3 and "git_commit" in run_info
    assert run_info["model"] == str(other_policy_dir) and run_info["reference"] == str(tiny_model_dir)
    assert run_info["backend"] == "hf" and run_info["reward_model"] == scorer.served_model_name
    assert len(run_info["model_fingerprint"]) == 16 and run_info["model_commit"] is None
    assert run_info["model_fingerprint"] != run_info["reference_fingerprint"]
    assert {k: first[k] for k in run_info} == run_info
    for row in rows:
        assert row["outcome"] == (
            "win"
            if row["policy_reward"] > row["reference_reward"]
            else "loss"
            if row["policy_reward"] < row["reference_reward"]
            else "tie"
        )
        expected = scorer.score(
            [
                [
                    {"role": "user", "content": row["prompt"]},
                    {"role": "assistant", "content": row["policy_response"]},
                ]
            ]
        )[0]
        assert row["policy_reward"] == pytest.approx(expected, abs=1e-4)
    # The re-run pays nothing: generations and scores come from the caches, results are identical.
    assert (
        second["requests"]["requests"] == 0
        and second["requests"]["cache_hits"] == first["requests"]["scored"]
    )
    assert second["generations_reused"] == {"policy": True, "reference": True}
    assert (second["wins"], second["ties"], second["losses"]) == (
        first["wins"],
        first["ties"],
        first["losses"],
    )
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["win_rate"] == second["win_rate"]

    # The judge and its sanity probes, scored first through the same client (and cached like the items).
    assert saved["judge"]["model"] == scorer.served_model_name
    assert saved["judge"]["base_url"] == server.url
    probes = saved["judge_probes"]
    assert probes["total"] == 15 and probes["passed"] + probes["n_failed"] + probes["n_errors"] == 15
    assert probes["ok"] == (probes["n_failed"] == 0) and "probes" not in probes
    assert all({"kind", "good_score", "bad_score"} <= set(f) for f in probes["failed"])
    full = json.loads((tmp_path / "out" / "judge_probes.json").read_text())
    distinct = {
        json.dumps([r["prompt"], reply])
        for r in full["probes"]
        for reply in (r["good_reply"], r["bad_reply"])
    }
    # This file is the re-run's: its probes were all cache hits, nothing was asked.
    assert len(full["probes"]) == 15 and full["requests"]["requests"] == 0
    assert full["requests"]["cache_hits"] == len(distinct)
    # Length control: the fields exist, lengths match the answers, estimates are numbers or None with a reason.
    policy_chars = [len(r["policy_response"]) for r in rows]
    assert saved["lengths"]["policy"]["mean_chars"] == pytest.approx(sum(policy_chars) / 6)
    assert set(saved["lengths"]["reference"]) == {"mean_chars", "median_chars", "mean_words", "median_words"}
    fit = saved["length_control"]["chars"]["fit"]
    assert saved["length_controlled_win_rate"] == fit["win_rate"] and saved["length_effect"] == fit["phi"]
    assert (fit["win_rate"] is None) == (fit["reason"] is not None)
    assert saved["length_matched_n"] == saved["length_control"]["chars"]["matched"]["n"] <= 6


def _self_comparison(model_dir, tmp_path, *judge: str, n_prompts: int, max_new_tokens: int) -> dict:
    """The offline CLI with the same tiny model as policy and reference, fixture prompts, a judge started for it."""
    return main(
        [
            *("--model", str(model_dir), "--reference", str(model_dir), "--prompts", "fixture"),
            *("--n_prompts", str(n_prompts), "--max_new_tokens", str(max_new_tokens), "--backend", "hf"),
            *judge,
            *(
                "--output_dir",
                str(tmp_path / "out"),
                "--reward_cache",
                str(tmp_path / "c.jsonl"),
                "--no_progress",
            ),
        ]
    )


def test_cli_offline_self_comparison_counts_ties(tmp_path, tiny_model_dir, tiny_rm_dir, capsys, monkeypatch):
    monkeypatch.setenv("REWARD_API_KEY", "do-not-leak-me")
    summary = _self_comparison(
        tiny_model_dir, tmp_path, "--serve_rm", str(tiny_rm_dir), n_prompts=4, max_new_tokens=6
    )
    out = capsys.readouterr().out
    # Same model, greedy: identical answers, every prompt a tie, scored once per distinct conversation.
    assert summary["ties"] == 4 and summary["wins"] == 0 and summary["win_rate"] == 0.0
    assert summary["win_rate_ties_half"] == 0.5
    assert summary["requests"]["requests"] == 4
    assert summary["generations_reused"] == {"policy": False, "reference": True}
    assert summary["max_reward_tokens"] == 1024  # read from the server's /v1/models
    assert "win rate 0.000 [95% CI 0.000, 0.490]" in out
    # --serve_rm: the judge is known to be a reward model; 4 tied prompts leave nothing to fit for length control.
    assert summary["judge"]["kind"] == "reward-model" and summary["judge"]["root"]
    assert summary["judge_probes"]["total"] == 15 and "judge probes" in out
    assert summary["length_controlled_win_rate"] is None and summary["length_effect"] is None
    assert "at least 5" in summary["length_control"]["chars"]["fit"]["reason"]
    assert summary["length_matched_win_rate"] == 0.5 and summary["length_matched_n"] == 4
    assert "length-controlled win rate" in out and "n/a" in out
    files = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert "do-not-leak-me" not in files + out


def test_cli_serves_the_verifiable_judge_which_passes_every_probe(tmp_path, tiny_model_dir, capsys):
    summary = _self_comparison(
        tiny_model_dir, tmp_path, "--serve_judge", "verifiable", n_prompts=3, max_new_tokens=4
    )
    # The judge knows every probe's right reply: it must prefer it to each bad one (the RM above need not).
    assert summary["judge"]["kind"] == "verifiable" and summary["judge"]["model"] == "verifiable-judge-v1"
    assert summary["judge_probes"]["passed"] == summary["judge_probes"]["total"] == 15
    # A random tiny model answers nothing right: both sides score the same, every prompt a tie, p = 1.
    assert summary["ties"] == 3 and summary["sign_test_p"] == 1.0
    assert "sign test p" in capsys.readouterr().out


def test_win_statistics_sign_test_hand_computed():
    rows = [
        {"outcome": o, "policy_reward": 0.0, "reference_reward": 0.0} for o in ["win"] * 9 + ["loss", "tie"]
    ]
    stats = win_statistics(rows)
    # Ties dropped: P(X <= 1 | n=10, 1/2) = 11/1024, two-sided 22/1024.
    assert stats["sign_test_p"] == 22 / 1024 and stats["wins"] == 9 and stats["ties"] == 1


def test_serve_rm_and_serve_judge_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(["--serve_rm", "x", "--serve_judge", "verifiable"])
    assert "not allowed with argument" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Fault injection through a real server on 127.0.0.1
# ----------------------------------------------------------------------------------------------------------

FAULTS = ("429", "500", "timeout", "garbage_html", "garbage_json", "empty_json", "drop")


class _LocalServer:
    """A real HTTP server on 127.0.0.1 (an ephemeral port) in a daemon thread; `url` ends in /v1."""

    def _serve(self, handler) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class FaultyRewardServer(_LocalServer):
    """Scores ``len(response)``; each conversation first suffers its scripted faults, then succeeds once.

    Conversations whose response contains "ALWAYS-BAD", or whose prompt is in ``fail_prompts``, get garbage or
    500 forever. Counts attempts and successes per conversation and records each request's prompt in ``asked``.
    """

    def __init__(self, faults_for):
        self.faults_for = faults_for
        self.attempts: dict[str, int] = {}
        self.successes: dict[str, int] = {}
        self.fail_prompts: set[str] = set()
        self.asked: list[str] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, body: bytes, ctype="application/json", headers=None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()
                response_text = body["messages"][-1]["content"]
                with outer.lock:
                    n = outer.attempts.get(key, 0)
                    outer.attempts[key] = n + 1
                    outer.asked.append(body["messages"][0]["content"])
                faults = outer.faults_for(response_text)
                fault = faults[n] if n < len(faults) else None
                if "ALWAYS-BAD" in response_text:
                    fault = "garbage_json"
                if body["messages"][0]["content"] in outer.fail_prompts:
                    fault = "500"
                if fault == "429":
                    self._send(429, b'{"error": {"message": "slow down"}}', headers={"Retry-After": "0"})
                elif fault == "500":
                    self._send(500, b'{"error": {"message": "boom"}}')
                elif fault == "timeout":
                    # No answer until the client gives up (its deadline closes the connection: EOF here);
                    # bounded, so a client without a deadline cannot hang the suite.
                    select.select([self.connection], [], [], 60)
                    self.close_connection = True
                elif fault == "garbage_html":
                    self._send(200, b"<html>upstream error</html>", ctype="text/html")
                elif fault == "garbage_json":
                    self._send(200, b'{"choices": [{"message": {"content": "I think it is good"}}]}')
                elif fault == "empty_json":
                    self._send(200, b"")  # a JSON content type and no body
                elif fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    with outer.lock:
                        outer.successes[key] = outer.successes.get(key, 0) + 1
                    reward = float(len(response_text))
                    payload = {
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": f"reward:{reward}"}}
                        ]
                    }
                    self._send(200, json.dumps(payload).encode())

        self._serve(Handler)


def test_fault_injection_every_item_scored_or_failed_and_nothing_twice(tmp_path, tiny_model_dir):
    n = 12
    prompts = [f"question {i}" for i in range(n)]
    policy = ["p" * (i + 1) for i in range(n)]
    reference = ["r" * 6 for _ in range(n)]
    policy[3] = "ALWAYS-BAD answer"  # unreadable no matter how often it is asked
    policy[7] = "pppppppppppppppppppp" + "x" * 10

    # Most conversations meet one or two faults first (every kind once at least); the retry budget (3) absorbs
    # them. At most one unreadable answer each (the second would fail the item), one timeout in all (each costs
    # the client's whole deadline, which is generous so that no real answer is ever mistaken for a timeout).
    schedule = {
        policy[0]: ["429"],
        policy[1]: ["500", "429"],
        policy[2]: ["timeout"],
        policy[4]: ["garbage_html"],
        policy[5]: ["drop", "garbage_json"],
        policy[6]: ["empty_json", "500"],
        policy[7]: ["drop", "500"],
        policy[8]: ["429", "drop", "500"],
        reference[0]: ["500"],
    }
    assert set(FAULTS) == {fault for faults in schedule.values() for fault in faults}
    server = FaultyRewardServer(lambda text: schedule.get(text, []))
    cache = tmp_path / "cache.jsonl"
    try:

        def run():
            client = RewardClient(
                server.url,
                "judge",
                cache_path=cache,
                timeout_s=3.0,
                max_retries=3,
                backoff_s=0.01,
                backoff_max_s=0.05,
            )
            return evaluate_winrate(
                model="unused",
                reference="unused",
                prompts=prompts,
                prompt_source={"test": True},
                client=client,
                params=SamplingParams(),
                output_dir=tmp_path / "out",
                concurrency=4,
                max_reward_tokens=1024,
                count_tokenizer=str(tiny_model_dir),
                responses={"policy": policy, "reference": reference},
                progress=False,
                print_table=False,
                run_judge_probes=False,  # this test counts the endpoint's requests for the items alone
            )

        first = run()
        attempts_after_first = dict(server.attempts)
        second = run()
    finally:
        server.close()

    assert first["n_failed"] == 1 and first["n_scored"] == n - 1
    assert [(f["index"], f["role"]) for f in first["failed"]] == [(3, "policy")]
    assert "unparseable" in first["failed"][0]["error"]
    # Scores are right (reward = response length) despite the faults.
    assert first["wins"] == sum(len(p) > 6 for i, p in enumerate(policy) if i != 3)
    assert first["ties"] == 1 and first["losses"] == 4
    errors = first["requests"]["errors"]
    for kind in ("http_429", "http_500", "timeout", "unparseable", "connection"):
        assert errors.get(kind, 0) >= 1, (kind, errors)
    # Nothing was scored twice: each conversation got at most one successful answer over both runs.
    assert all(count == 1 for count in server.successes.values())
    assert len(server.successes) == first["requests"]["distinct_conversations"] - 1
    # The re-run sends requests only for the failed item, the rest are cache hits. Its body stays unreadable,
    # which is not transient: one retry only (2 attempts), although max_retries is 3.
    new_requests = {k: server.attempts[k] - attempts_after_first.get(k, 0) for k in server.attempts}
    assert sum(new_requests.values()) == 2 and second["requests"]["cache_hits"] == len(server.successes)
    assert second["n_failed"] == 1 and second["wins"] == first["wins"]


def test_cli_exits_non_zero_while_items_fail_and_a_rerun_asks_only_for_them(tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Name a colour.\nName a fruit.\nName a city.\n")
    argv = ["--model", str(tiny_model_dir), "--reference", str(tiny_model_dir), "--prompts", str(prompts),
            "--reward_model", "judge", "--max_reward_tokens", "1024", "--max_retries", "1", "--backoff_s", "0.01",
            "--max_new_tokens", "4", "--backend", "hf", "--output_dir", str(tmp_path / "out"),
            "--reward_cache", str(tmp_path / "cache.jsonl"), "--no_progress",
            "--skip_probes"]  # fmt: skip
    # --skip_probes: this test counts the endpoint's requests for the items alone.
    server = FaultyRewardServer(lambda text: [])
    server.fail_prompts = {"Name a fruit."}  # every answer for it is a 500 in the first run
    try:
        with pytest.raises(SystemExit) as info:
            main([*argv, "--reward_url", server.url])
        asked_first = list(server.asked)
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        server.fail_prompts = set()
        rerun = main([*argv, "--reward_url", server.url])
    finally:
        server.close()
    # A str exit code is exit status 1 for the interpreter: the command fails while an item is failed.
    assert isinstance(info.value.code, str) and "1 prompt(s) failed" in info.value.code
    assert "re-run the same command" in info.value.code
    assert summary["n_failed"] == 1 and {f["index"] for f in summary["failed"]} == {1}
    assert sorted(set(asked_first)) == ["Name a city.", "Name a colour.", "Name a fruit."]
    # The re-run asks the endpoint for the failed item only (one request: it succeeds now) and passes.
    assert server.asked[len(asked_first) :] == ["Name a fruit."]
    assert rerun["n_failed"] == 0 and rerun["n_scored"] == 3
    assert rerun["requests"]["cache_hits"] == 2 and rerun["requests"]["requests"] == 1


def test_stop_on_probe_failure_stops_before_generating(tmp_path, tiny_model_dir, monkeypatch):
    """The fault server scores len(response): a judge that loves long replies fails the repeated and off-topic
    probes, so --stop_on_probe_failure ends the run before any answer is generated or any prompt scored."""
    import eval.winrate as winrate

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Name a colour.\nName a fruit.\n")
    argv = ["--model", str(tiny_model_dir), "--reference", str(tiny_model_dir), "--prompts", str(prompts),
            "--reward_model", "judge", "--max_reward_tokens", "1024", "--max_new_tokens", "4", "--backend", "hf",
            "--output_dir", str(tmp_path / "out"), "--reward_cache", str(tmp_path / "cache.jsonl"),
            "--no_progress"]  # fmt: skip
    generated: list[str] = []
    real_generate = winrate.generate

    def counting_generate(model, *args, **kwargs):
        generated.append(model)
        return real_generate(model, *args, **kwargs)

    monkeypatch.setattr(winrate, "generate", counting_generate)
    server = FaultyRewardServer(lambda text: [])
    try:
        with pytest.raises(SystemExit) as info:
            main([*argv, "--reward_url", server.url, "--stop_on_probe_failure"])
        asked_when_stopped = list(server.asked)
        generated_when_stopped = list(generated)
        written_when_stopped = sorted(p.name for p in (tmp_path / "out").iterdir())
        # Without the flag the same judge is only a warning: the run completes and records the failure.
        summary = main([*argv, "--reward_url", server.url])
        asked_with_probes = len(server.asked)
        skipped = main(
            [*argv, "--reward_url", server.url, "--skip_probes", "--output_dir", str(tmp_path / "o2")]
        )
    finally:
        server.close()
    message = str(info.value.code)
    assert message.startswith("error: the judge failed") and "--stop_on_probe_failure" in message
    assert "repeated" in message and "off_topic" in message
    assert generated_when_stopped == [] and written_when_stopped == ["judge_probes.json"]
    assert asked_when_stopped and not {"Name a colour.", "Name a fruit."} & set(asked_when_stopped)
    stopped_report = summary["judge_probes"]
    assert not stopped_report["ok"] and stopped_report["by_kind"]["repeated"]["passed"] == 0
    assert summary["n_scored"] == 2 and summary["judge"] == {
        "model": "judge",
        "base_url": server.url,
        "kind": None,  # a loopback endpoint that lists no model: unknown
        "root": None,
    }
    # The second run's probes came from the cache; the third asked for its two items only.
    assert asked_with_probes == len(asked_when_stopped) + 2
    assert skipped["judge_probes"] == {"skipped": True} and len(server.asked) == asked_with_probes
    assert skipped["requests"]["cache_hits"] == 2


class _StatusServer(_LocalServer):
    def __init__(self, status: int):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self.requests = getattr(self, "requests", 0)
                self.server.hits += 1
                body = json.dumps({"error": {"message": f"status {status}"}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._serve(Handler)
        self.httpd.hits = 0


MSGS = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


@pytest.mark.parametrize(
    "status, fragment", [(401, "refused the API key"), (403, "refused the API key"), (404, "answered 404")]
)
def test_refused_key_or_unknown_model_stops_the_run(status, fragment):
    server = _StatusServer(status)
    try:
        client = RewardClient(server.url, "judge", max_retries=3, backoff_s=0.01)
        with pytest.raises(RewardEndpointError, match=fragment):
            client.score(MSGS)
        assert server.httpd.hits == 1
    finally:
        server.close()


def test_client_errors_fail_the_item_without_retrying():
    server = _StatusServer(400)
    try:
        client = RewardClient(server.url, "judge", max_retries=3, backoff_s=0.01)
        result = client.score(MSGS)
        assert result.score is None and "HTTP 400" in result.error and server.httpd.hits == 1
    finally:
        server.close()


def test_no_server_is_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = RewardClient(f"http://127.0.0.1:{port}/v1", "judge", max_retries=0)
    with pytest.raises(RewardEndpointError, match="make serve-reward"):
        client.list_models()


def test_reward_cache_key_depends_on_model_and_messages():
    assert cache_key("a", MSGS) == cache_key("a", [dict(m) for m in MSGS])
    assert cache_key("a", MSGS) != cache_key("b", MSGS)
    other_answer = [MSGS[0], {"role": "assistant", "content": "b"}]
    other_prompt = [{"role": "user", "content": "q2"}, MSGS[1]]
    system = [{"role": "system", "content": "s"}, *MSGS]
    keys = {cache_key("a", m) for m in (MSGS, other_answer, other_prompt, system)}
    assert len(keys) == 4


def test_unparseable_body_is_retried_once_only():
    server = FaultyRewardServer(lambda text: [])
    try:
        client = RewardClient(server.url, "judge", max_retries=5, backoff_s=0.01, backoff_max_s=0.02)
        result = client.score([MSGS[0], {"role": "assistant", "content": "ALWAYS-BAD"}])
        assert result.score is None and "unparseable" in result.error
        assert result.attempts == 2 and sum(server.attempts.values()) == 2
        # Transient faults still get the whole budget: 429, 500, 429, then success on the 4th attempt.
        server.faults_for = lambda text: ["429", "500", "429"]
        ok = client.score(MSGS)
        assert ok.score == 1.0 and ok.attempts == 4
    finally:
        server.close()


# ----------------------------------------------------------------------------------------------------------
# --reward_model auto, model errors, the generation cache, provenance, vLLM cleanup
# ----------------------------------------------------------------------------------------------------------


class _ModelsServer(_LocalServer):
    """Answers GET /v1/models with the given ids (a shared endpoint lists many); POSTs are counted, not scored."""

    def __init__(self, ids: list[str]):
        self.posts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, status, data):
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                data = [{"id": i, "object": "model", "created": 0, "owned_by": "x"} for i in ids]
                self._json(200, {"object": "list", "data": data})

            def do_POST(self):
                outer.posts += 1
                self._json(500, {"error": {"message": "not a reward model"}})

        self._serve(Handler)


def test_auto_reward_model_needs_exactly_one_listed_model(tmp_path, tiny_model_dir):
    assert pick_auto_reward_model([{"id": "only-rm"}], "http://h/v1") == "only-rm"
    with pytest.raises(RewardEndpointError, match="lists no model"):
        pick_auto_reward_model([], "http://h/v1")
    many = [f"org/chat-{i}" for i in range(8)] + ["nvidia/llama-3.1-nemotron-70b-reward"]
    server = _ModelsServer(many)
    try:
        with pytest.raises(SystemExit) as info:
            main(
                [
                    "--model",
                    str(tiny_model_dir),
                    "--reference",
                    str(tiny_model_dir),
                    "--prompts",
                    "fixture",
                    "--n_prompts",
                    "1",
                    "--reward_url",
                    server.url,
                    "--output_dir",
                    str(tmp_path / "out"),
                    "--reward_cache",
                    "",
                    "--no_progress",
                ]
            )
    finally:
        server.close()
    message = str(info.value.code)
    assert "lists 9 models" in message and "org/chat-0" in message and "(9 in all)" in message
    assert "--reward_model" in message and "REWARD_MODEL=" in message
    assert server.posts == 0 and not (tmp_path / "out" / "summary.json").exists()


def test_unavailable_model_is_a_one_line_error(tmp_path, tiny_model_dir):
    missing = tmp_path / "no-such-model"
    with pytest.raises(SystemExit) as info:
        main(
            [
                "--model",
                str(missing),
                "--reference",
                str(tiny_model_dir),
                "--prompts",
                "fixture",
                "--n_prompts",
                "1",
                "--reward_model",
                "judge",
                "--max_reward_tokens",
                "1024",
                "--backend",
                "hf",
                "--output_dir",
                str(tmp_path / "out"),
                "--reward_cache",
                "",
                "--no_progress",
            ]
        )
    message = info.value.code
    assert isinstance(message, str) and "\n" not in message and message.startswith("error: ")
    assert "no-such-model" in message and "--model" in message and "MODEL=" in message


def test_policies_compared_under_one_root_share_the_references_answers(tmp_path, tiny_model_dir, monkeypatch):
    """The default generation cache is <output_root>/generations: a second policy against the same reference
    generates only its own answers, and each comparison still gets its own folder."""
    import shutil

    import eval.winrate as winrate

    policies = []
    for name in ("policy-a", "policy-b"):
        shutil.copytree(tiny_model_dir, tmp_path / name)
        policies.append(tmp_path / name)
    generated: list[str] = []
    real_generate = winrate.generate

    def recording_generate(model, conversations, params, **kwargs):
        generated.append(Path(model).name)
        return real_generate(model, conversations, params, **kwargs)

    monkeypatch.setattr(winrate, "generate", recording_generate)
    reference = tmp_path / "reference"
    shutil.copytree(tiny_model_dir, reference)
    root = tmp_path / "winrate"
    summaries = [
        main(
            [
                *("--model", str(policy), "--reference", str(reference), "--prompts", "fixture"),
                *("--n_prompts", "2", "--max_new_tokens", "4", "--backend", "hf"),
                *("--serve_judge", "verifiable"),
                *("--output_root", str(root), "--reward_cache", str(tmp_path / "c.jsonl"), "--no_progress"),
                "--skip_probes",
            ]
        )
        for policy in policies
    ]
    assert generated == ["policy-a", "reference", "policy-b"]
    assert summaries[0]["generations_reused"] == {"policy": False, "reference": False}
    assert summaries[1]["generations_reused"] == {"policy": False, "reference": True}
    assert len(list((root / "generations").iterdir())) == 3
    folders = sorted(p.name for p in root.iterdir() if (p / "summary.json").is_file())
    assert len(folders) == 2 and "policy-a-vs-" in folders[0] and "policy-b-vs-" in folders[1]


def test_generation_cache_misses_when_local_weights_change(tmp_path, tiny_model_dir, monkeypatch):
    import shutil

    from safetensors.torch import load_file, save_file

    import eval.winrate as winrate

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    calls: list[str] = []

    def fake_generate(model, conversations, params, **kwargs):
        calls.append(model)
        return [[f"answer {len(calls)}"] for _ in conversations]

    monkeypatch.setattr(winrate, "generate", fake_generate)
    params, prompts, cache = SamplingParams(max_new_tokens=4), ["a", "b"], tmp_path / "gen"

    def run():
        return generate_responses(
            str(folder), prompts, params, revision=None, backend="hf", cache_dir=cache, progress=False
        )

    first, reused = run()
    assert not reused and calls == [str(folder)]
    assert run() == (first, True) and len(calls) == 1  # unchanged folder: reused
    # "Retrain" into the same folder: same file names and sizes, other weights.
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    save_file(
        {k: v + 1.0 if v.is_floating_point() else v for k, v in tensors.items()}, weights, {"format": "pt"}
    )
    assert weights.stat().st_size == (tiny_model_dir / "model.safetensors").stat().st_size
    again, reused = run()
    assert not reused and len(calls) == 2 and again != first
    # A changed chat template (tokenizer files) is a different model too.
    config = folder / "tokenizer_config.json"
    config.write_text(config.read_text().replace("{", "{ ", 1))
    assert run()[1] is False and len(calls) == 3


def test_resolve_model_commit_reads_the_hub_cache(tmp_path, monkeypatch, tiny_model_dir):
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--tiny"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert resolve_model_commit("org/tiny", None) == commit
    assert resolve_model_commit("org/not-cached", None) is None
    assert resolve_model_commit(str(tiny_model_dir), None) is None  # local folders: the fingerprint instead
    assert resolve_model_commit("embedded", None) is None


def test_vllm_engine_is_freed_after_each_call(monkeypatch):
    """vLLM is not installed here: a stand-in module records that each engine is shut down and collected."""
    import sys
    import types
    import weakref

    import posttrain.sampling as sampling

    events: list[str] = []
    engines: list[weakref.ref] = []

    class EngineCore:
        def shutdown(self):
            events.append("shutdown")

    class LLM:
        def __init__(self, model, revision=None, seed=0):
            self.llm_engine = types.SimpleNamespace(engine_core=EngineCore())
            engines.append(weakref.ref(self))

        def generate(self, prompts, sampling_params, use_tqdm=True):
            out = types.SimpleNamespace(text="ok")
            return [types.SimpleNamespace(outputs=[out]) for _ in prompts]

    fake = types.ModuleType("vllm")
    fake.LLM = LLM
    fake.SamplingParams = lambda **kw: kw
    distributed = types.ModuleType("vllm.distributed")
    distributed.cleanup_dist_env_and_memory = lambda: events.append("cleanup")
    fake.distributed = distributed
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.distributed", distributed)
    params = SamplingParams(max_new_tokens=2)
    for _ in range(2):  # policy, then reference, in one process
        assert sampling._generate_vllm("some/model", ["hi"], params, revision=None) == [["ok"]]
        assert engines[-1]() is None  # no reference kept: the engine is gone before the next call
    assert events == ["shutdown", "cleanup", "shutdown", "cleanup"]

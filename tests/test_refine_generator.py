"""The synthetic prompt generator (posttrain.synthetic) against a real HTTP server on 127.0.0.1 that answers
with duplicates, malformed JSON, 429, 500 and slow replies: nothing lost, nothing duplicated, no hang; the cache
makes a re-run free; the split shares no input."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.refine_tasks import load_task
from posttrain.synthetic import (
    CACHE_FILE,
    Deduplicator,
    GeneratorOutputError,
    load_prompts,
    main,
    normalise,
    parse_inputs,
    read_card,
    split_inputs,
)
from tests.fake_openai import chat_completion, send_json

BATCH_RE = re.compile(r"Batch (\d+)\.")
WORDS = (
    "river lantern copper meadow violin harbor pepper glacier orbit saddle thimble comet ledger basil".split()
)
SLOW_S = 3.0


def distinct_input(batch: int, j: int) -> str:
    rng = random.Random(batch * 1000 + j)
    return f"Please rewrite: the {' '.join(rng.sample(WORDS, 6))} story number {batch}-{j}. (Style: formal)"


class GenServer(ThreadingHTTPServer):
    """Behaviour per batch number (read from the request), so arrival order does not matter."""

    daemon_threads = True

    def __init__(self, script: dict[int, list[str]]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script = script  # batch -> behaviours for attempts 1, 2, ... (the last repeats)
        self.lock = threading.Lock()
        self.attempts: defaultdict[int, int] = defaultdict(int)
        self.bodies: list[dict] = []

    def handle_error(self, request, client_address) -> None:
        pass  # the slow answer's client has gone: expected


class Handler(BaseHTTPRequestHandler):
    server: GenServer

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, payload: dict | str, headers: dict | None = None) -> None:
        send_json(self, status, payload, headers)

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        batch = int(BATCH_RE.search(body["messages"][1]["content"]).group(1))
        srv = self.server
        with srv.lock:
            srv.bodies.append(body)
            srv.attempts[batch] += 1
            attempt = srv.attempts[batch]
        plan = srv.script.get(batch, ["good"])
        behaviour = plan[min(attempt, len(plan)) - 1]
        if behaviour == "429":
            return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        if behaviour == "500":
            return self._send(500, {"error": {"message": "boom"}})
        if behaviour == "slow":
            time.sleep(SLOW_S)
        if behaviour == "malformed":
            content = '{"inputs": ["cut off'
        elif behaviour == "duplicates":
            first = distinct_input(1, 0)
            content = json.dumps(
                {
                    "inputs": [
                        first,
                        first.upper(),
                        first.replace("Please", "Kindly"),
                        "  ",
                        "x",
                        17,
                        distinct_input(batch, 0),
                    ]
                }
            )
        else:
            content = (
                "```json\n" + json.dumps({"inputs": [distinct_input(batch, j) for j in range(4)]}) + "\n```"
            )
        self._send(200, chat_completion(body["model"], content))


@pytest.fixture
def make_server():
    servers = []

    def make(script: dict[int, list[str]]) -> GenServer:
        srv = GenServer(script)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def task_file(tmp_path) -> Path:
    path = tmp_path / "task.md"
    path.write_text(
        "---\nname: test_task\nsummary: a test task\npolicy_prompt: 'Rewrite: {input}'\nrubric: be good\n"
        "generator: {inputs_per_request: 4, min_chars: 5, max_chars: 300}\n---\nRewrite texts in a style.\n"
    )
    return path


def run_generator(srv: GenServer, task_file: Path, out: Path, *extra: str) -> Path:
    return main(
        [
            "--task", str(task_file), "--output_dir", str(out), "--base_url", f"http://127.0.0.1:{srv.server_port}/v1",
            "--model", "gen", "--timeout_s", "1", "--backoff_s", "0.01", "--concurrency", "4", "--quiet", *extra,
        ]
    )  # fmt: skip


SCRIPT = {
    2: ["429", "good"],
    3: ["500", "500", "good"],
    4: ["malformed", "good"],
    5: ["slow", "good"],
    6: ["duplicates"],
    7: ["500"],  # fails for good: counted, never cached
}


@pytest.mark.timeout(120)
def test_faults_lose_nothing_and_duplicate_nothing(make_server, task_file, tmp_path) -> None:
    srv = make_server(SCRIPT)
    out = tmp_path / "prompts"
    started = time.monotonic()
    run_generator(srv, task_file, out, "--n", "28", "--max_requests", "8", "--max_retries", "3")
    assert time.monotonic() - started < 60  # the slow answer hit the 1 s deadline and was retried
    card = read_card(out)
    counts = card["counts"]
    train, test = load_prompts(out, "train"), load_prompts(out, "test")
    texts = list(train["source"]) + list(test["source"])
    # Every input of every good answer (batches 1-5 and 8: 4 each) plus batch 6's one new input.
    expected = {distinct_input(b, j) for b in (1, 2, 3, 4, 5, 8) for j in range(4)} | {distinct_input(6, 0)}
    assert set(texts) == expected
    assert len(texts) == len({normalise(t) for t in texts}) == 25
    assert counts["requests_failed"] == 1 and card["failures"][0].startswith("request 6:")
    assert counts["exact_duplicates"] == 2 and counts["near_duplicates"] == 1
    assert counts["empty"] == 1 and counts["too_short"] == 1 and counts["bad_items"] == 1
    assert counts["unusable_answers"] >= 1  # the malformed answer
    assert srv.attempts[2] == 2 and srv.attempts[3] == 3 and srv.attempts[5] == 2
    # Each request its own seed, and a retry after an unusable answer another (the same seed repeats the answer).
    seeds: dict[int, list[int]] = {}
    for body in srv.bodies:
        seeds.setdefault(int(BATCH_RE.search(body["messages"][1]["content"]).group(1)), []).append(
            body["seed"]
        )
    assert len({attempts[0] for attempts in seeds.values()}) == 8
    assert len(set(seeds[4])) == 2
    assert not set(train["source"]) & set(test["source"])
    assert train[0]["prompt"] == [{"role": "user", "content": "Rewrite: " + train[0]["source"]}]


@pytest.mark.timeout(120)
def test_rerun_is_served_from_the_cache(make_server, task_file, tmp_path) -> None:
    srv = make_server({3: ["500"]})
    out = tmp_path / "prompts"
    run_generator(srv, task_file, out, "--n", "12", "--max_retries", "0")
    first = list(load_prompts(out, "train")["source"]) + list(load_prompts(out, "test")["source"])
    sent_before = len(srv.bodies)
    lines = (out / CACHE_FILE).read_text().splitlines()
    assert len(lines) == len({json.loads(line)["key"] for line in lines})  # one cache entry per answer

    srv.script = {}  # the failed request now succeeds; the cached ones must not be asked again
    run_generator(srv, task_file, out, "--n", "12", "--max_retries", "0")
    new_batches = [
        int(BATCH_RE.search(b["messages"][1]["content"]).group(1)) for b in srv.bodies[sent_before:]
    ]
    assert 3 in new_batches and 1 not in new_batches and 2 not in new_batches
    card = read_card(out)
    assert card["counts"]["requests_cached"] >= 2

    # A third run with everything cached sends nothing and gives the same split.
    sent = len(srv.bodies)
    run_generator(srv, task_file, out, "--n", "12", "--max_retries", "0")
    assert len(srv.bodies) == sent
    again = list(load_prompts(out, "train")["source"]) + list(load_prompts(out, "test")["source"])
    # Answers are read in request order: with batch 3 answered, the first 12 inputs are batches 1-3's.
    assert set(again) == {distinct_input(b, j) for b in (1, 2, 3) for j in range(4)}
    assert set(first) == {distinct_input(b, j) for b in (1, 2, 4) for j in range(4)}


def test_a_cut_cache_line_is_skipped(make_server, task_file, tmp_path) -> None:
    srv = make_server({})
    out = tmp_path / "prompts"
    run_generator(srv, task_file, out, "--n", "4")
    cache = out / CACHE_FILE
    cache.write_text(cache.read_text() + '{"key": "abc", "content": "cut')  # a crash mid-write
    sent = len(srv.bodies)
    run_generator(srv, task_file, out, "--n", "4")
    assert len(srv.bodies) == sent


def test_refused_key_is_a_clear_error(task_file, tmp_path) -> None:
    class Refuse(Handler):
        def do_POST(self) -> None:  # noqa: N802
            self._send(401, {"error": {"message": "bad key sk-should-not-leak"}})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(SystemExit, match="refused the request"):
            main(["--task", str(task_file), "--output_dir", str(tmp_path / "o"), "--base_url",
                  f"http://127.0.0.1:{srv.server_port}/v1", "--model", "gen", "--quiet", "--n", "4"])  # fmt: skip
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "1"], "--n must be >= 2"),
        (["--test_fraction", "1.5"], "--test_fraction"),
        (["--base_url", "ftp://x"], "--base_url must start with http"),
        (["--api_key_env", "sk-abcdefghijklmnopqrstuvwxyz123"], "looks like an API key"),
        (["--concurrency", "0"], "--concurrency"),
    ],
)
def test_bad_options(task_file, tmp_path, args, message) -> None:
    base = [
        "--task",
        str(task_file),
        "--output_dir",
        str(tmp_path / "o"),
        "--base_url",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
    ]
    with pytest.raises(SystemExit, match=re.escape(message)):
        main(base + args)


def test_no_endpoint_named(task_file, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("GENERATOR_BASE_URL", raising=False)
    monkeypatch.delenv("GENERATOR_MODEL", raising=False)
    with pytest.raises(SystemExit, match="needs --base_url and --model"):
        main(["--task", str(task_file), "--output_dir", str(tmp_path / "o")])


# ------------------------------------------------------------------------------------------------ units


def test_parse_inputs_cases() -> None:
    assert parse_inputs('Sure! {"inputs": ["a", {"input": "b"}, 3]}').inputs == ["a", "b"]
    assert parse_inputs('{"inputs": ["a", null]}').bad_items == 1
    for bad in [
        "",
        "no json",
        '{"inputs": "a"}',
        '{"inputs": []}',
        '{"inputs": [1, 2]}',
        "[1, 2]",
        None,
        '{"x": [',
    ]:
        with pytest.raises(GeneratorOutputError):
            parse_inputs(bad)


def test_deduplicator_exact_and_near() -> None:
    dedup = Deduplicator(0.7)
    base = "The meeting moved to Thursday at three in the afternoon, please tell the whole team today"
    assert dedup.add(base) == "kept"
    assert dedup.add(base.upper() + "!!") == "exact"
    assert dedup.add(base.replace("today", "now")) == "near"
    assert dedup.add("A completely different sentence about cats and their naps in the sun") == "kept"
    with pytest.raises(ValueError):
        Deduplicator(0.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=40), max_size=30), st.integers(0, 5))
def test_dedup_and_split_properties(texts, seed) -> None:
    dedup = Deduplicator(0.7)
    kept = [t for t in texts if dedup.add(t) == "kept"]
    assert len({normalise(t) for t in kept}) == len(kept)  # no exact duplicate survives
    if len(kept) >= 2:
        train, test = split_inputs(kept, 0.25, seed)
        assert sorted(train + test) == sorted(kept) and train and test
        assert split_inputs(kept, 0.25, seed) == (train, test)  # the seed fixes the split


def test_tldr_fixture_folder(tmp_path) -> None:
    out = tmp_path / "tldr"
    main(
        [
            "--task",
            "recipes/refine/tasks/tldr.md",
            "--inputs_dataset",
            "tldr_fixture",
            "--output_dir",
            str(out),
            "--quiet",
        ]
    )
    train, test = load_prompts(out, "train"), load_prompts(out, "test")
    assert len(train) == 256 and len(test) == 64
    assert not set(train["source"]) & set(test["source"])
    assert all(s.startswith("SUBREDDIT: r/") and not s.endswith("TL;DR:") for s in test["source"])
    assert read_card(out)["source"] == "tldr_fixture"
    task = load_task("recipes/refine/tasks/tldr.md")
    assert test[0]["prompt"][0]["content"] == task.render_prompt(test[0]["source"])


def test_a_crash_between_the_renames_keeps_the_cache(make_server, task_file, tmp_path) -> None:
    srv = make_server({})
    out = tmp_path / "prompts"
    run_generator(srv, task_file, out, "--n", "4")
    sent = len(srv.bodies)
    out.rename(tmp_path / ".prompts.old")  # the old folder moved aside, the new one not yet in place
    run_generator(srv, task_file, out, "--n", "4")
    assert len(srv.bodies) == sent and len(load_prompts(out, "train")) == 3

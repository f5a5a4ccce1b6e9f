"""The win-rate reward client against hostile answers from a real 127.0.0.1 server: garbage 200 bodies, a
trickling body, oversized replies, a logprob sent as a string, and an endpoint that echoes the API key."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.reward_client import (
    MAX_CONTENT_CHARS,
    MAX_REPLY_BYTES,
    RewardClient,
    RewardEndpointError,
    RewardParseError,
    parse_reward,
)
from eval.winrate import evaluate_winrate, main
from posttrain.sampling import SamplingParams

SECRET = "sk-live-7c1d2e3f4a5b-DO-NOT-LEAK"
MSGS = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def completion_body(content=None, logprobs=None) -> bytes:
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return json.dumps(
        {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice]}
    ).encode()


class HostileServer:
    """A real HTTP server on 127.0.0.1 that answers each POST with ``answer(handler, request_json)``.

    Bounded: it shuts itself down after ``lifetime_s`` so that a regressed client cannot hang the suite, and it
    records every request (its JSON and its Authorization header).
    """

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler, dict], None], lifetime_s: float = 60.0):
        self.answer = answer
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.answer(self, {"path": self.path})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append({"body": body, "authorization": self.headers.get("Authorization")})
                outer.answer(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # a client that gave up closed its socket
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self._stopper = threading.Timer(lifetime_s, self.close)
        self._stopper.daemon = True
        self._stopper.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self._stopper.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def send(handler, status: int, body: bytes, ctype: str = "application/json") -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def client_for(server: HostileServer, **kwargs) -> RewardClient:
    settings_ = dict(api_key=SECRET, timeout_s=10.0, max_retries=3, backoff_s=0.01, backoff_max_s=0.02)
    return RewardClient(server.url, "judge", **(settings_ | kwargs))


# ---------------------------------------------------------------------------------------------------------
# Garbage 200 answers fail the item (retried once), never the run
# ---------------------------------------------------------------------------------------------------------

GARBAGE_200 = {
    "empty": b"",
    "whitespace": b"  \n",
    "not_json": b"{not json",
    "truncated": completion_body("reward:1.0")[:-7],
    "deeply_nested": b"[" * 100_000,
    "not_utf8": b'{"choices": "\xff\xfe"}',
    "a_list": b"[1, 2]",
}


@pytest.mark.parametrize("name", sorted(GARBAGE_200))
def test_garbage_200_with_json_content_type_fails_the_item(name):
    body = GARBAGE_200[name]
    with HostileServer(lambda handler, request: send(handler, 200, body)) as server:
        client = client_for(server)
        result = client.score(MSGS)  # no exception: the item fails, the run goes on
        assert result.score is None and result.error.startswith("unparseable answer")
        assert result.attempts == 2 and len(server.requests) == 2  # unparseable: retried once only
        assert client.stats.failed == 1 and client.stats.errors == {"unparseable": 2}


def test_a_garbage_answer_fails_one_item_and_the_run_writes_its_summary(tmp_path, tiny_model_dir):
    def answer(handler, request):
        response = request["messages"][-1]["content"]
        if response == "BROKEN":
            return send(handler, 200, b"")  # JSON content type, empty body
        send(handler, 200, completion_body(f"reward:{len(response)}"))

    with HostileServer(answer) as server:
        summary = evaluate_winrate(
            model="unused",
            reference="unused",
            prompts=["q0", "q1", "q2"],
            prompt_source={"test": True},
            client=client_for(server),
            params=SamplingParams(),
            output_dir=tmp_path / "out",
            concurrency=2,
            max_reward_tokens=1024,
            count_tokenizer=str(tiny_model_dir),
            responses={"policy": ["long answer", "BROKEN", "x"], "reference": ["mid", "mid", "mid"]},
            progress=False,
            print_table=False,
        )
    assert (summary["wins"], summary["losses"], summary["n_failed"]) == (1, 1, 1)
    assert [(f["index"], f["role"]) for f in summary["failed"]] == [(1, "policy")]
    assert "empty body" in summary["failed"][0]["error"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n_failed"] == 1


# ---------------------------------------------------------------------------------------------------------
# A total deadline per request, bounded replies, a linear parse
# ---------------------------------------------------------------------------------------------------------


def _worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "reward-request"]


def test_trickling_body_is_cut_at_the_total_deadline():
    def trickle(handler, request):
        # Headers at once, then one byte every 0.5 s: each read succeeds well within the per-read timeout. The
        # whole answer would take minutes; the server gives up after 20 bytes (10 s) to stay bounded.
        body = completion_body("reward:1.0") + b" " * 400
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.flush()
        for i in range(20):
            try:
                handler.wfile.write(body[i : i + 1])
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.5)
        handler.close_connection = True

    with HostileServer(trickle) as server:
        client = client_for(server, timeout_s=1.5, max_retries=0)
        started = time.monotonic()
        result = client.score(MSGS)
        elapsed = time.monotonic() - started
        assert result.score is None and "timed out" in result.error
        assert client.stats.errors == {"timeout": 1}
        assert elapsed < 6.0, elapsed  # the 1.5 s deadline (generously), not the server's 10 s
        # The abandoned request's client was closed: its worker ends at the next byte instead of lingering.
        deadline = time.monotonic() + 10
        while _worker_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _worker_threads()


def test_oversized_reply_is_not_read_whole():
    huge = completion_body("x" * (MAX_REPLY_BYTES + 10))
    with HostileServer(lambda handler, request: send(handler, 200, huge)) as server:
        result = client_for(server, max_retries=0).score(MSGS)
    assert result.score is None and f"longer than {MAX_REPLY_BYTES} bytes" in result.error


ADVERSARIAL = {
    "no_colon": "a" + " " * 39_998 + "b",
    "spaces_before_colon": "reward" + " " * 39_990 + ":1",
    "trailing_spaces": "reward:1" + " " * 39_990 + "x",
    "commas": "," * 40_000,
    "digits": "reward:" + "1" * 39_990 + "x",
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_long_content_is_refused_fast(name):
    content = ADVERSARIAL[name]
    started = time.perf_counter()
    with pytest.raises(RewardParseError, match="characters long"):
        parse_reward(json.loads(completion_body(content)))
    # Just under the cap the parse is linear too: the same shapes at MAX_CONTENT_CHARS (only the spaces
    # before a colon are a valid reward).
    short = content[: MAX_CONTENT_CHARS - 2] + content[-2:]
    if name == "spaces_before_colon":
        assert parse_reward(json.loads(completion_body(short))) == 1.0
    else:
        with pytest.raises(RewardParseError):
            parse_reward(json.loads(completion_body(short)))
    # Linear work on 50k characters takes microseconds; the old quadratic parse took seconds.
    assert time.perf_counter() - started < 1.0


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_parse_reward_reads_the_reward_or_raises_parse_error(content, value):
    # Any content: a finite float or RewardParseError, nothing else.
    try:
        parsed = parse_reward({"choices": [{"message": {"content": content}}]})
    except RewardParseError:
        pass
    else:
        assert isinstance(parsed, float) and parsed == parsed and abs(parsed) != float("inf")
    # A well-formed reward among other keys is read exactly.
    text = f"helpfulness:1,reward:{value!r},verbosity:0"
    assert parse_reward({"choices": [{"message": {"content": text}}]}) == value


def test_logprob_sent_as_a_string_does_not_score():
    body = completion_body(None, [{"token": "reward", "logprob": "5", "bytes": None, "top_logprobs": []}])
    with HostileServer(lambda handler, request: send(handler, 200, body)) as server:
        result = client_for(server).score(MSGS)
    assert result.score is None and "not a number: '5'" in result.error


# ---------------------------------------------------------------------------------------------------------
# An endpoint that echoes the API key: the key is in no output
# ---------------------------------------------------------------------------------------------------------


def _echo_key(handler, request):
    """Echo the key back: in a 500 error, in a 200 answer's content, in a 400, depending on the response."""
    auth = handler.headers.get("Authorization", "")
    key = auth.removeprefix("Bearer ")
    if "path" in request:  # GET /v1/models: the key as a model id, among others
        data = [{"id": i, "object": "model", "created": 0, "owned_by": "x"} for i in ("a", f"model-{key}")]
        return send(handler, 200, json.dumps({"object": "list", "data": data}).encode())
    response = request["messages"][-1]["content"]
    if response == "r500":
        return send(handler, 500, json.dumps({"error": {"message": f"upstream failed for {auth}"}}).encode())
    if response == "r200":
        return send(handler, 200, completion_body(f"reward:{key}"))
    if response == "r400":
        return send(handler, 400, json.dumps({"error": {"message": f"bad key {key} for this"}}).encode())
    if response == "r401":
        return send(handler, 401, json.dumps({"error": {"message": f"Incorrect API key {key}"}}).encode())
    send(handler, 200, completion_body("reward:1"))


def test_echoed_key_is_in_no_file_log_or_error(tmp_path, tiny_model_dir, caplog, capsys):
    with HostileServer(_echo_key) as server, caplog.at_level(logging.DEBUG):
        client = client_for(server, max_retries=1)
        summary = evaluate_winrate(
            model="unused",
            reference="unused",
            prompts=["q0", "q1", "q2"],
            prompt_source={"test": True},
            client=client,
            params=SamplingParams(),
            output_dir=tmp_path / "out",
            concurrency=2,
            max_reward_tokens=1024,
            count_tokenizer=str(tiny_model_dir),
            responses={"policy": ["r500", "r200", "r400"], "reference": ["ok", "ok", "ok"]},
            progress=False,
            print_table=True,
        )
        with pytest.raises(RewardEndpointError) as refused:
            client.score([MSGS[0], {"role": "assistant", "content": "r401"}])
    assert all(r["authorization"] == f"Bearer {SECRET}" for r in server.requests)  # sent, and only sent
    assert summary["n_failed"] == 3 and len(summary["failed"]) == 3
    assert all("***" in f["error"] for f in summary["failed"])  # scrubbed, not dropped
    written = "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    printed = capsys.readouterr()
    for text in (written, printed.out, printed.err, caplog.text, str(refused.value), repr(refused.value)):
        assert SECRET not in text
    assert refused.value.__context__ is None


def _refuse_every_post(handler, request):
    if "path" in request:
        return send(handler, 404, b'{"error": {"message": "no listing"}}')
    return _echo_key(handler, {"messages": [{"content": "r401"}]})


@pytest.mark.parametrize(
    "answer, flags, fragment",
    [
        (_echo_key, [], "lists 2 models"),  # --reward_model auto prints the listed ids; one holds the key
        (
            _refuse_every_post,
            ["--reward_model", "judge", "--max_reward_tokens", "1024"],
            "refused the API key",
        ),
    ],
)
def test_cli_prints_no_echoed_key(answer, flags, fragment, tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("REWARD_API_KEY", SECRET)
    argv = ["--model", str(tiny_model_dir), "--reference", str(tiny_model_dir), "--prompts", "fixture",
            "--n_prompts", "1", "--max_new_tokens", "4", "--backend", "hf", "--output_dir",
            str(tmp_path / "out"), "--reward_cache", "", "--no_progress"]  # fmt: skip
    with HostileServer(answer) as server, pytest.raises(SystemExit) as info:
        main([*argv, "--reward_url", server.url, *flags])
    message = str(info.value.code)
    assert fragment in message and "***" in message and SECRET not in message
    assert SECRET not in "".join(capsys.readouterr())
    assert not any(SECRET in p.read_text() for p in tmp_path.rglob("*") if p.is_file())

"""Leaderboard submission: building with a tiny model, the schema validator, and uploads to a 127.0.0.1 server."""

from __future__ import annotations

import copy
import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval.submit import (
    SubmissionError,
    UploadError,
    build_submission,
    load_submission,
    main,
    upload_submission,
    validate_submission,
)
from posttrain.sampling import SamplingParams


@pytest.fixture(scope="module")
def submission(tiny_model_dir) -> dict:
    return build_submission(
        model=str(tiny_model_dir),
        method="sft",
        countdown_n=3,
        countdown_max_new_tokens=4,
        ultrafeedback_prompts="fixture",
        ultrafeedback_n=3,
        ultrafeedback_max_new_tokens=5,
        params=SamplingParams(seed=7),
        backend="hf",
        progress=False,
    )


def test_built_submission_is_valid_and_complete(submission, tiny_model_dir):
    validate_submission(submission)
    assert submission["schema_version"] == 1
    meta = submission["metadata"]
    assert meta["model"] == str(tiny_model_dir) and meta["method"] == "sft" and meta["seed"] == 7
    assert meta["sampling"]["seed"] == 7 and meta["backend"] == "hf" and "git_commit" in meta
    # Each task records its own token limit; the metadata keeps the largest (schema v1).
    assert submission["countdown"]["max_new_tokens"] == 4
    assert submission["ultrafeedback"]["max_new_tokens"] == 5 and meta["sampling"]["max_new_tokens"] == 5
    cd = submission["countdown"]
    assert len(cd["items"]) == 3 and cd["prompt_source"]["heldout"] is True
    assert all(isinstance(i["completion"], str) and i["prompt"] for i in cd["items"])
    uf = submission["ultrafeedback"]
    assert len(uf["items"]) == 3 and uf["prompt_source"]["dataset"] == "fixture"
    item = uf["items"][0]
    assert item["id"] == hashlib.sha256(item["prompt"].encode()).hexdigest()


def test_countdown_prompt_file_keeps_ids(tmp_path, tiny_model_dir):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "lb-1", "target": 10, "nums": [2, 5, 3]}\n{"target": 7, "nums": [3, 4]}\n')
    data = build_submission(
        model=str(tiny_model_dir),
        method="grpo",
        tasks=["countdown"],
        countdown_prompts=str(tasks),
        countdown_max_new_tokens=3,
        backend="hf",
        progress=False,
    )
    assert [i["id"] for i in data["countdown"]["items"]] == ["lb-1", "cd-00001"]
    assert "ultrafeedback" not in data
    # Only the built task's limit counts (not the UltraFeedback default of 256).
    assert data["countdown"]["max_new_tokens"] == 3 and data["metadata"]["sampling"]["max_new_tokens"] == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"target": "ten", "nums": [1, 2]}\n')
    with pytest.raises(ValueError, match="line 1: field 'target' must be a non-negative int"):
        build_submission(
            model=str(tiny_model_dir), method="x", tasks=["countdown"], countdown_prompts=str(bad)
        )


def _mutate(data: dict, path: str, value) -> dict:
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is KeyError:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("schema_version", 2, "submission.schema_version: Input should be 1"),
        ("metadata", KeyError, "submission.metadata: is missing"),
        ("extra", 1, "submission.extra: unknown field"),
        ("metadata.model", "", "metadata.model: must be a non-empty string"),
        ("metadata.method", None, "metadata.method: Input should be a valid string"),
        ("metadata.method", " ", "metadata.method: must be a non-empty string"),
        ("metadata.git_commit", 5, "metadata.git_commit: Input should be a valid string"),
        ("metadata.created", "yesterday", "metadata.created: must be an ISO-8601"),
        ("metadata.seed", -1, "metadata.seed: Input should be greater than or equal to 0"),
        ("metadata.backend", "tpu", "metadata.backend: Input should be 'hf' or 'vllm'"),
        ("metadata.sampling.top_p", 0, "metadata.sampling.top_p: Input should be greater than 0"),
        (
            "metadata.sampling.temperature",
            "hot",
            "metadata.sampling.temperature: Input should be a valid number",
        ),
        ("metadata.sampling.n", 4, "metadata.sampling.n: Input should be 1"),
        (
            "metadata.sampling.max_new_tokens",
            0,
            "metadata.sampling.max_new_tokens: Input should be greater than or equal to 1",
        ),
        ("metadata.sampling.typo", 1, "metadata.sampling.typo: unknown field"),
        ("metadata.runtime", "x", "metadata.runtime: unknown field"),
        ("countdown.items", [], "countdown.items: List should have at least 1 item"),
        ("countdown.template", "", "countdown.template: must be a non-empty string"),
        ("countdown.prompt_source", "heldout", "countdown.prompt_source: Input should be a valid dictionary"),
        ("countdown.items.0.target", "5", "countdown.items[0].target: Input should be a valid integer"),
        ("countdown.items.0.target", True, "countdown.items[0].target: Input should be a valid integer"),
        (
            "countdown.items.0.target",
            -3,
            "countdown.items[0].target: Input should be greater than or equal to 0",
        ),
        ("countdown.items.0.nums", [3], "countdown.items[0].nums: List should have at least 2 items"),
        ("countdown.items.0.nums", [3, 1.5], "countdown.items[0].nums[1]: Input should be a valid integer"),
        (
            "countdown.items.0.completion",
            None,
            "countdown.items[0].completion: Input should be a valid string",
        ),
        (
            "countdown.items.0.id",
            "cd-00001",
            "countdown.items: duplicate id 'cd-00001' at index 1 (also at index 0)",
        ),
        ("countdown.items.1", "text", "countdown.items[1]: Input should be a valid dictionary"),
        (
            "ultrafeedback.items.2.response",
            ["a"],
            "ultrafeedback.items[2].response: Input should be a valid string",
        ),
        ("ultrafeedback.items.0.prompt", "  ", "ultrafeedback.items[0].prompt: must be a non-empty string"),
        ("ultrafeedback.items.0.id", KeyError, "ultrafeedback.items[0].id: is missing"),
        ("ultrafeedback.items.0.score", 1, "ultrafeedback.items[0].score: unknown field"),
        ("ultrafeedback.items.0.id", "0" * 64, "ultrafeedback.items[0].id: must be the sha256 of the prompt"),
        (
            "ultrafeedback.items.1.prompt",
            "edited",
            "ultrafeedback.items[1].id: must be the sha256 of the prompt",
        ),
        (
            "countdown.max_new_tokens",
            0,
            "countdown.max_new_tokens: Input should be greater than or equal to 1",
        ),
        (
            "ultrafeedback.max_new_tokens",
            "4",
            "ultrafeedback.max_new_tokens: Input should be a valid integer",
        ),
        # Non-finite numbers, huge integers, lone surrogates and nesting: refused with their path.
        (
            "metadata.sampling.temperature",
            float("nan"),
            "metadata.sampling.temperature: Input should be a finite",
        ),
        ("metadata.sampling.top_p", float("inf"), "metadata.sampling.top_p: Input should be a finite number"),
        (
            "countdown.prompt_source.seed",
            float("-inf"),
            "countdown.prompt_source: 'seed' must be a string, a finite",
        ),
        (
            "countdown.prompt_source.extra",
            [[1]],
            "countdown.prompt_source: 'extra' must be a string, a finite",
        ),
        pytest.param(
            "countdown.items.0.target",
            10**5000,
            "countdown.items[0].target: Input should be less than or equal",
            id="5000-digit-target",
        ),
        (
            "countdown.items.0.completion",
            "ok \udc80",
            "countdown.items[0].completion: holds a lone surrogate",
        ),
    ],
)
def test_validator_names_every_bad_field(submission, path, value, expected):
    with pytest.raises(SubmissionError) as info:
        validate_submission(_mutate(submission, path, value))
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


def test_validator_reports_all_problems_and_needs_a_task(submission):
    bad = _mutate(_mutate(submission, "metadata.seed", "x"), "countdown.items.0.nums", "1,2")
    with pytest.raises(SubmissionError) as info:
        validate_submission(bad)
    assert len(info.value.problems) == 2
    no_task = {k: v for k, v in submission.items() if k not in ("countdown", "ultrafeedback")}
    with pytest.raises(SubmissionError, match="holds no task"):
        validate_submission(no_task)
    with pytest.raises(SubmissionError, match="submission: Input should be a valid dictionary"):
        validate_submission([1, 2])


def test_load_submission_file_errors(tmp_path):
    with pytest.raises(SubmissionError, match="no such file"):
        load_submission(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(SubmissionError, match="not valid JSON"):
        load_submission(tmp_path / "bad.json")


def _hostile_file(tmp_path, submission, old: str, new: str):
    text = json.dumps(submission)
    assert old in text
    path = tmp_path / "hostile.json"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (
            '"temperature": 0.0',
            '"temperature": NaN',
            "metadata.sampling.temperature: Input should be a finite",
        ),
        (
            '"heldout": true',
            '"heldout": Infinity',
            "countdown.prompt_source: 'heldout' must be a string, a finite",
        ),
        ('"seed": 7', '"seed": -Infinity', "metadata.seed: Input should be a valid integer"),
        (
            '"target": ',
            '"target": ' + "9" * 5000 + ', "x": ',
            "countdown.items[0].target: Input should be a valid",
        ),
        (
            '"completion": "',
            '"completion": "\\ud800',
            "countdown.items[0].completion: holds a lone surrogate",
        ),
        ('"response": "', '"response": "\\udfff', "ultrafeedback.items[0].response: holds a lone surrogate"),
    ],
)
def test_hostile_numbers_and_strings_in_a_file_are_path_named_errors(
    tmp_path, submission, old, new, expected
):
    path = _hostile_file(tmp_path, submission, old, new)
    with pytest.raises(SubmissionError) as info:
        load_submission(path)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


def test_deep_nesting_and_huge_numbers_are_clean_cli_errors(tmp_path, submission, capsys):
    deep = _hostile_file(
        tmp_path, submission, '"heldout": true', '"heldout": ' + "[" * 100_000 + "]" * 100_000
    )
    with pytest.raises(SubmissionError, match=r"nested too deeply to read \(at line 1 column \d+\)"):
        load_submission(deep)
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps(submission).replace('"seed": 7', '"seed": ' + "1" * 5000, 1))
    for path in (deep, huge):
        with pytest.raises(SystemExit) as info:
            main(["--validate", str(path)])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
    assert "metadata.seed: Input should be a valid integer, got <a 5000-digit integer>" in err


def test_default_countdown_tasks_are_held_out(submission, tiny_model_dir):
    """The submission's tasks come from the held-out key space (not merely labelled heldout: true)."""
    from posttrain.data import is_heldout

    default = build_submission(
        model=str(tiny_model_dir),
        method="sft",
        tasks=["countdown"],
        countdown_max_new_tokens=1,
        backend="hf",
        progress=False,
    )
    for data in (submission, default):
        items = data["countdown"]["items"]
        assert items and all(is_heldout(i["target"], i["nums"]) for i in items), items
        assert all(str(i["target"]) in i["prompt"] for i in items)  # the prompts ask for those very tasks
    assert len(default["countdown"]["items"]) == 32


class LeaderboardServer:
    """Answers every POST with a scripted status; records what it received."""

    def __init__(self, status: int = 200, body: dict | None = None, headers: dict | None = None):
        self.received: list[tuple[dict, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                data = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((dict(self.headers), data))
                payload = json.dumps(body or {"id": "sub-42", "status": "queued"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/submit"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def saved(tmp_path, submission):
    path = tmp_path / "sub.json"
    path.write_text(json.dumps(submission))
    return path


def test_upload_to_a_test_server(saved, tmp_path, monkeypatch, capsys):
    with LeaderboardServer() as server:
        receipt = upload_submission(saved, server.url, "tok-123")
        headers, body = server.received[0]
        assert headers["Authorization"] == "Bearer tok-123"
        assert headers["Idempotency-Key"] == hashlib.sha256(saved.read_bytes()).hexdigest()
        assert body == saved.read_bytes()
        assert receipt["status"] == 200 and receipt["answer"]["id"] == "sub-42"
        assert "tok-123" not in saved.with_suffix(".receipt.json").read_text()
        # The CLI path: validate then upload, token from the environment.
        monkeypatch.setenv("LEADERBOARD_TOKEN", "tok-123")
        main(["--upload", str(saved), "--url", server.url])
        assert len(server.received) == 2
    out = capsys.readouterr().out
    assert "uploaded" in out and "tok-123" not in out


@pytest.mark.parametrize(
    "status, fragment",
    [
        (401, "rejected LEADERBOARD_TOKEN"),
        (403, "not allowed to submit"),
        (409, "already has this submission"),
        (413, "too large"),
        (422, "could not accept the content"),
        (
            429,
            "submission limit or rate limit reached (429 Too Many Requests); the server says retry after 60",
        ),
        (500, "server failed (500)"),
        (503, "server failed (503)"),
        (418, "refused the submission (HTTP 418)"),
    ],
)
def test_every_refusal_has_a_clear_error(saved, status, fragment):
    with LeaderboardServer(
        status, {"error": {"message": "detail from server"}}, {"Retry-After": "60"}
    ) as server:
        with pytest.raises(UploadError) as info:
            upload_submission(saved, server.url, "tok")
    message = str(info.value)
    assert fragment in message and "detail from server" in message and str(saved) in message
    assert "tok" not in message.replace("token", "").replace("TOKEN", "")


class RecordingServer:
    """Records every request (any method) with its headers; answers 200."""

    def __init__(self):
        self.received: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.received.append((self.command, dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = _record

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.port = self.httpd.server_address[1]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_refused_and_the_token_stays_home(saved, status):
    with RecordingServer() as other:
        location = f"http://127.0.0.1:{other.port}/collect?session=abc"
        with LeaderboardServer(status, {"moved": True}, {"Location": location}) as server:
            with pytest.raises(UploadError) as info:
                upload_submission(saved, server.url, "tok-secret-9")
            assert len(server.received) == 1  # the one POST, not followed
        assert other.received == []  # the other address never saw a request, let alone the token
    message = str(info.value)
    assert f"HTTP {status}" in message and f"redirect to 127.0.0.1:{other.port}" in message
    assert "tok-secret-9" not in message and "session=abc" not in message
    assert not saved.with_suffix(".receipt.json").exists()


def test_connection_refused_and_unsafe_settings(saved):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UploadError, match="could not reach the leaderboard"):
        upload_submission(saved, f"http://127.0.0.1:{port}/submit", "tok", timeout_s=2)
    with pytest.raises(UploadError, match="plain http to a remote host"):
        upload_submission(saved, "http://leaderboard.example.com/submit", "tok")
    with pytest.raises(UploadError, match="LEADERBOARD_TOKEN is not"):
        upload_submission(saved, "https://leaderboard.example.com/submit", None)
    with pytest.raises(UploadError, match="http\\(s\\) URL"):
        upload_submission(saved, "ftp://x/y", "tok")
    # Error messages show the URL without user:password or query (either could be a credential).
    for url in ("ftp://user:pa55word@x/y?key=k3y", f"http://user:pa55word@127.0.0.1:{port}/s?key=k3y"):
        with pytest.raises(UploadError) as info:
            upload_submission(saved, url, "tok", timeout_s=2)
        assert "pa55word" not in str(info.value) and "k3y" not in str(info.value)


def test_cli_without_url_writes_file_and_says_where(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.delenv("LEADERBOARD_URL", raising=False)
    path = main(
        [
            "--model",
            str(tiny_model_dir),
            "--method",
            "dpo",
            "--countdown_n",
            "2",
            "--ultrafeedback_prompts",
            "fixture",
            "--ultrafeedback_n",
            "2",
            "--countdown_max_new_tokens",
            "3",
            "--ultrafeedback_max_new_tokens",
            "3",
            "--backend",
            "hf",
            "--output_dir",
            str(tmp_path / "subs"),
            "--no_progress",
        ]
    )
    out = capsys.readouterr().out
    assert path.parent == tmp_path / "subs" and path.name.startswith(f"{tiny_model_dir.name}-dpo-")
    assert f"not uploaded. The submission is at {path}" in out
    load_submission(path)
    with pytest.raises(SystemExit):
        main(["--model", str(tiny_model_dir)])  # no --method
    assert "--method is required" in capsys.readouterr().err


def test_default_sets_are_small_and_given_sets_are_sent_whole(tmp_path, tiny_model_dir):
    prompts = tmp_path / "lb.txt"
    prompts.write_text("".join(f"leaderboard prompt {i}\n" for i in range(40)))
    tasks = tmp_path / "lb.jsonl"
    tasks.write_text("".join(json.dumps({"target": 10 + i, "nums": [i, 10]}) + "\n" for i in range(35)))
    given = build_submission(
        model=str(tiny_model_dir),
        method="sft",
        countdown_prompts=str(tasks),
        countdown_max_new_tokens=1,
        ultrafeedback_prompts=str(prompts),
        ultrafeedback_max_new_tokens=1,
        backend="hf",
        progress=False,
    )
    assert len(given["countdown"]["items"]) == 35 and len(given["ultrafeedback"]["items"]) == 40
    default = build_submission(
        model=str(tiny_model_dir),
        method="sft",
        countdown_max_new_tokens=1,
        ultrafeedback_prompts="fixture",
        ultrafeedback_max_new_tokens=1,
        backend="hf",
        progress=False,
    )
    assert len(default["countdown"]["items"]) == 32 and default["countdown"]["prompt_source"]["heldout"]
    from eval.winrate import load_prompt_set

    assert len(default["ultrafeedback"]["items"]) == min(32, len(load_prompt_set("fixture")[0]))


def test_help_explains_the_default_counts(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: all tasks of --countdown_prompts; 32 generated ones without it" in text
    assert "all prompts of a given file/dataset; 32 of the default or fixture set" in text


def test_unavailable_model_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(
            [
                "--model",
                str(tmp_path / "no-such-model"),
                "--method",
                "sft",
                "--backend",
                "hf",
                "--no_progress",
            ]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "no-such-model" in err
    assert "--model" in err and "MODEL=" in err and "Traceback" not in err


class ScriptedSocketServer:
    """A raw loopback server: reads one request, waits `delay_s`, then sends `answer` in chunks `step_s` apart."""

    def __init__(self, answer: bytes, *, delay_s: float = 0.0, chunk: int = 1 << 20, step_s: float = 0.0):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/submit"
        self.requests = 0
        self.done = threading.Event()

        def serve():
            self.sock.settimeout(0.2)
            while not self.done.is_set():
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    continue
                with conn:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    while len(body) < length:
                        body += conn.recv(65536)
                    self.requests += 1
                    if self.done.wait(delay_s):
                        return
                    try:
                        for start in range(0, len(answer), chunk):
                            conn.sendall(answer[start : start + chunk])
                            if self.done.wait(step_s):
                                return
                    except OSError:
                        pass

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(5)
        self.sock.close()


def _http_answer(status: int, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def test_a_slow_answer_says_the_upload_was_sent(saved):
    import time

    with ScriptedSocketServer(_http_answer(200, b"{}"), delay_s=5) as server:
        started = time.monotonic()
        with pytest.raises(UploadError) as info:
            upload_submission(saved, server.url, "tok", timeout_s=1)
        elapsed = time.monotonic() - started
        assert server.requests == 1
    message = str(info.value)
    assert "could not reach" not in message and "was sent to" in message and "may have received it" in message
    assert "resend" in message and elapsed < 3


def test_a_byte_at_a_time_answer_is_cut_at_the_total_deadline(saved):
    import time

    body = json.dumps({"id": "sub-1", "pad": "x" * 200}).encode()
    with ScriptedSocketServer(_http_answer(200, body), chunk=1, step_s=0.05) as server:
        started = time.monotonic()
        with pytest.raises(UploadError, match="no complete answer within --timeout_s 1 s"):
            upload_submission(saved, server.url, "tok", timeout_s=1)
        assert time.monotonic() - started < 3  # urllib's per-read timeout alone: ~12 s here
    assert not saved.with_suffix(".receipt.json").exists()


TOKEN = "lb-SECRET-7f3a9c21e4"


@pytest.mark.parametrize("status", [200, 400, 500])
def test_a_token_echoed_by_the_server_lands_nowhere(saved, status, monkeypatch, capsys):
    # The echo sits where a 300-character cut of the message would keep only part of it.
    echo = {"error": {"message": "x" * 280 + f" Bearer {TOKEN}"}, "token": TOKEN}
    # ... and once JSON-escaped, so that only the decoded text holds it.
    body = json.dumps(echo)[:-1] + ', "escaped": "' + TOKEN.replace("-", "\\u002d") + '"}'
    with ScriptedSocketServer(_http_answer(status, body.encode())) as server:
        monkeypatch.setenv("LEADERBOARD_TOKEN", TOKEN)
        if status == 200:
            main(["--upload", str(saved), "--url", server.url])
            receipt = saved.with_suffix(".receipt.json").read_text()
            assert "SECRET" not in receipt and "***" in receipt
        else:
            with pytest.raises(SystemExit):
                main(["--upload", str(saved), "--url", server.url])
    captured = capsys.readouterr()
    assert "SECRET" not in captured.out + captured.err


_JSON_LEAVES = (
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 10**30, -1, "\ud800", "a\udfffb", ""])
    | st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(alphabet=st.characters(exclude_categories=[]), max_size=8)  # surrogates included
)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
_PATHS = [
    "schema_version",
    "metadata.seed",
    "metadata.created",
    "metadata.sampling.top_p",
    "metadata.sampling.batch_size",
    "countdown.prompt_source.seed",
    "countdown.items.0.nums",
    "countdown.items.1.target",
    "countdown.items.0.completion",
    "ultrafeedback.items.0.prompt",
    "ultrafeedback.max_new_tokens",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(_PATHS), value=_JSON)
def test_any_json_value_anywhere_is_valid_or_a_path_named_error(submission, path, value):
    data = _mutate(submission, path, value)
    try:
        validate_submission(data)
    except SubmissionError as exc:
        assert exc.problems and all(": " in p for p in exc.problems)
        str(exc).encode("utf-8")  # printable: no lone surrogate reaches the error text
        return
    # Valid: then it is plain JSON that can be written and read back unchanged.
    text = json.dumps(data, allow_nan=False, ensure_ascii=False)
    assert json.loads(text.encode("utf-8")) == data

"""Leaderboard submission: building with a tiny model, the schema validator, and uploads to a 127.0.0.1 server."""

from __future__ import annotations

import copy
import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

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
        ("schema_version", 2, "submission.schema_version: must be 1"),
        ("metadata", KeyError, "submission.metadata: is missing"),
        ("extra", 1, "submission.extra: unknown field"),
        ("metadata.model", "", "metadata.model: must be a non-empty string"),
        ("metadata.method", None, "metadata.method: must be a non-empty string"),
        ("metadata.git_commit", 5, "metadata.git_commit: must be a string or null"),
        ("metadata.created", "yesterday", "metadata.created: must be an ISO-8601"),
        ("metadata.seed", -1, "metadata.seed: must be an int >= 0"),
        ("metadata.backend", "tpu", "metadata.backend: must be 'hf' or 'vllm'"),
        ("metadata.sampling.top_p", 0, "metadata.sampling.top_p: must be a number in (0, 1]"),
        ("metadata.sampling.temperature", "hot", "metadata.sampling.temperature: must be a number >= 0"),
        ("metadata.sampling.n", 4, "metadata.sampling.n: must be 1"),
        ("metadata.sampling.max_new_tokens", 0, "metadata.sampling.max_new_tokens: must be an int >= 1"),
        ("metadata.sampling.typo", 1, "metadata.sampling.typo: unknown field"),
        ("metadata.runtime", "x", "metadata.runtime: unknown field"),
        ("countdown.items", [], "countdown.items: must be a non-empty list"),
        ("countdown.template", "", "countdown.template: must be a non-empty string"),
        ("countdown.prompt_source", "heldout", "countdown.prompt_source: must be an object"),
        ("countdown.items.0.target", "5", "countdown.items[0].target: must be an int >= 0"),
        ("countdown.items.0.target", True, "countdown.items[0].target: must be an int >= 0"),
        ("countdown.items.0.nums", [3], "countdown.items[0].nums: must be a list of at least 2 ints"),
        ("countdown.items.0.completion", None, "countdown.items[0].completion: must be a string"),
        (
            "countdown.items.0.id",
            "cd-00001",
            "countdown.items[1].id: duplicate id 'cd-00001' (also at index 0)",
        ),
        ("countdown.items.1", "text", "countdown.items[1]: must be an object"),
        ("ultrafeedback.items.2.response", ["a"], "ultrafeedback.items[2].response: must be a string"),
        ("ultrafeedback.items.0.prompt", "  ", "ultrafeedback.items[0].prompt: must be a non-empty string"),
        ("ultrafeedback.items.0.id", KeyError, "ultrafeedback.items[0].id: is missing"),
        ("ultrafeedback.items.0.score", 1, "ultrafeedback.items[0].score: unknown field"),
        ("ultrafeedback.items.0.id", "0" * 64, "ultrafeedback.items[0].id: must be the sha256 of the prompt"),
        (
            "ultrafeedback.items.1.prompt",
            "edited",
            "ultrafeedback.items[1].id: must be the sha256 of the prompt",
        ),
        ("countdown.max_new_tokens", 0, "countdown.max_new_tokens: must be an int >= 1"),
        ("ultrafeedback.max_new_tokens", "4", "ultrafeedback.max_new_tokens: must be an int >= 1"),
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
    with pytest.raises(SubmissionError, match="must be an object"):
        validate_submission([1, 2])


def test_load_submission_file_errors(tmp_path):
    with pytest.raises(SubmissionError, match="no such file"):
        load_submission(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(SubmissionError, match="not valid JSON"):
        load_submission(tmp_path / "bad.json")


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

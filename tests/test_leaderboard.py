"""The self-hosted leaderboard: hidden sets, the upload API and its error codes, server-side scoring, the durable
queue, limits under concurrent load, hostile input, and the round trip from `eval.submit` to a scored row."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval import submit
from eval.reward_client import RewardClient
from eval.reward_server import RewardServer, build_scorer
from leaderboard import admin, db
from leaderboard.app import Board, LeaderboardServer, open_database
from leaderboard.scoring import Judge, ScoringWorker, check_against_sets, score_countdown
from leaderboard.sets import PRIVATE, PUBLIC, load_sets
from posttrain.chat_fixture import ultrafeedback_fixture_rows
from tests.conftest import submission_metadata

# Six hidden Countdown tasks: t0..t5 = 24 from (4, 6, k) for k = 1..6; only k = 1 has 4*6*1 = 24.
CD_ROWS = [
    {"id": f"t{i}", "target": 24, "nums": [4, 6, i + 1], "split": PUBLIC if i < 3 else PRIVATE}
    for i in range(6)
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def countdown_submission(answers: dict[str, str], method: str = "sft") -> dict:
    rows = {r["id"]: r for r in CD_ROWS}
    items = [
        {"id": i, "target": rows[i]["target"], "nums": rows[i]["nums"], "prompt": "p", "completion": a}
        for i, a in answers.items()
    ]
    return {
        "schema_version": 1,
        "metadata": submission_metadata(method),
        "countdown": {"prompt_source": {}, "template": "short", "items": items},
    }


def post(url: str, body: bytes, token: str | None, key: str | None = None, headers: dict | None = None):
    """(status, json answer, headers) of one POST."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if key:
        request.add_header("Idempotency-Key", key)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), exc.headers


def get(url: str, token: str | None = None):
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(predicate, timeout_s: float = 30.0, step_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError("condition not met in time")


def count_rows(make_session, *where) -> int:
    """Rows matching ``where``, read in a session of its own (an open SQLite session holds the write lock)."""
    with make_session() as session:
        return session.query(db.Submission).filter(*where).count()


def status_of(url: str, token: str, submission_id: int) -> dict:
    code, body = get(f"{url}/api/submissions/{submission_id}", token)
    assert code == 200, body
    return json.loads(body)


@pytest.fixture()
def countdown_board(tmp_path):
    """A live board with the Countdown set only; yields (url, board, token of "alpha")."""
    sets = load_sets(_write_jsonl(tmp_path / "cd.jsonl", CD_ROWS), None)
    make_session = open_database(f"sqlite:///{tmp_path / 'board.db'}")
    token = admin.team_add(make_session, "alpha", daily_limit=3)
    worker = ScoringWorker(make_session, sets, None, poll_s=0.05)
    board = Board(make_session, sets, worker, max_body_bytes=200_000)
    with LeaderboardServer(board, port=0) as server:
        yield server.url, board, token


# ----------------------------------------------------------------------------------------------------------
# Hidden sets
# ----------------------------------------------------------------------------------------------------------


def test_public_prompt_files_carry_no_answers_or_splits(tmp_path):
    uf = [{"prompt": "What is 2 + 3?", "reference": "2 + 3 = 5.", "split": PRIVATE}]
    sets = load_sets(_write_jsonl(tmp_path / "cd.jsonl", CD_ROWS), _write_jsonl(tmp_path / "uf.jsonl", uf))
    cd_rows = [json.loads(line) for line in sets.public_prompts("countdown").splitlines()]
    assert cd_rows[0] == {"id": "t0", "target": 24, "nums": [4, 6, 1]}
    assert all(set(r) == {"id", "target", "nums"} for r in cd_rows)
    assert sets.public_prompts("ultrafeedback") == b'{"prompt": "What is 2 + 3?"}\n'
    assert [i.split for i in sets.countdown.values()] == [PUBLIC] * 3 + [PRIVATE] * 3


def test_rows_without_a_split_are_divided_by_a_secret_hash(tmp_path):
    rows = [{"id": f"x{i}", "target": 10, "nums": [5, 5]} for i in range(400)]
    first = load_sets(_write_jsonl(tmp_path / "a.jsonl", rows), None)
    again = load_sets(tmp_path / "a.jsonl", None)
    assert [i.split for i in first.countdown.values()] == [i.split for i in again.countdown.values()]
    public = sum(i.split == PUBLIC for i in first.countdown.values())
    assert 150 < public < 250  # about half
    other = load_sets(
        _write_jsonl(tmp_path / "b.jsonl", rows + [{"id": "y", "target": 1, "nums": [1, 0]}]), None
    )
    assert [i.split for i in other.countdown.values()][:400] != [i.split for i in first.countdown.values()]


@pytest.mark.parametrize(
    "row, fragment",
    [
        ({"id": "a", "target": 3, "nums": [1, 2], "split": "secret"}, "field 'split' must be one of"),
        ({"id": "", "target": 3, "nums": [1, 2]}, "field 'id' must be a non-empty string"),
        ({"id": "a", "target": -3, "nums": [1, 2]}, "field 'target'"),
        ({"id": "a", "nums": [1, 2]}, "missing field 'target'"),
    ],
)
def test_bad_set_rows_name_the_line_and_field(tmp_path, row, fragment):
    path = _write_jsonl(tmp_path / "cd.jsonl", [{"id": "ok", "target": 3, "nums": [1, 2]}, row])
    with pytest.raises(ValueError, match="line 2") as info:
        load_sets(path, None)
    assert fragment in str(info.value)


# ----------------------------------------------------------------------------------------------------------
# Scoring rules (hand-computed)
# ----------------------------------------------------------------------------------------------------------


def test_countdown_scores_per_split_and_missing_items_count_as_wrong(tmp_path):
    sets = load_sets(_write_jsonl(tmp_path / "cd.jsonl", CD_ROWS), None)
    answers = {
        "t0": "<answer>4*6*1</answer>",  # right
        "t1": "<answer>4+6+2</answer>",  # formatted, wrong
        "t3": "no answer span",  # unformatted
        "t4": "<answer>(6-4)*5</answer>",  # uses 6, 4, 5 = the numbers of t4 (nums [4, 6, 5]): 10, wrong
    }
    scores = score_countdown(sets, countdown_submission(answers)["countdown"])
    assert scores[PUBLIC] == {
        "n": 3, "correct": 1, "formatted": 2, "missing": 1, "accuracy": 1 / 3, "format_rate": 2 / 3
    }  # fmt: skip
    assert scores[PRIVATE] == {
        "n": 3, "correct": 0, "formatted": 1, "missing": 1, "accuracy": 0.0, "format_rate": 1 / 3
    }  # fmt: skip


def test_submissions_must_be_about_the_boards_tasks(tmp_path):
    sets = load_sets(_write_jsonl(tmp_path / "cd.jsonl", CD_ROWS), None)
    data = countdown_submission({"t0": "x", "t1": "y"})
    data["countdown"]["items"][1]["nums"] = [1, 2, 3]
    data["countdown"]["items"].append(dict(data["countdown"]["items"][0], id="zzz"))
    data["ultrafeedback"] = {"prompt_source": {}, "items": []}
    problems = check_against_sets(data, sets)
    assert any(
        p.startswith("countdown.items[1]: task 't1' is target 24 with nums [4, 6, 2]") for p in problems
    )
    assert any(p.startswith("countdown.items[2].id: 'zzz' is not a task of this board") for p in problems)
    assert any(p.startswith("ultrafeedback: this board has no ultrafeedback set") for p in problems)


# ----------------------------------------------------------------------------------------------------------
# The API and its error codes
# ----------------------------------------------------------------------------------------------------------


def test_accepted_scored_replayed_and_limited(countdown_board):
    url, board, token = countdown_board
    first = json.dumps(countdown_submission({"t0": "<answer>4*6*1</answer>"})).encode()
    code, answer, _ = post(url, first, token, hashlib.sha256(first).hexdigest())
    assert code == 202 and answer["status"] == "queued"
    sid = answer["id"]
    scored = wait_until(lambda: (s := status_of(url, token, sid))["status"] == "scored" and s)
    assert scored["scores"]["countdown"][PUBLIC]["accuracy"] == pytest.approx(1 / 3)
    assert PRIVATE not in scored["scores"]["countdown"]  # hidden while the board is open
    # A resend (same key, same body) is a replay: counted once.
    code, answer, _ = post(url, first, token, hashlib.sha256(first).hexdigest())
    assert (code, answer["id"], answer["replay"]) == (200, sid, True)
    # The same key with another body is a conflict.
    other = json.dumps(countdown_submission({"t0": "<answer>6*4*1</answer>"})).encode()
    code, answer, _ = post(url, other, token, hashlib.sha256(first).hexdigest())
    assert code == 409 and "Idempotency-Key" in answer["error"]
    # The daily limit (3): two more are accepted, the fourth is refused with Retry-After.
    for k in (2, 3):
        body = json.dumps(countdown_submission({"t0": f"<answer>{k}</answer>"})).encode()
        assert post(url, body, token)[0] == 202
    body = json.dumps(countdown_submission({"t0": "<answer>4</answer>"})).encode()
    code, answer, headers = post(url, body, token)
    assert code == 429 and "3 submissions of the last 24 hours" in answer["error"]
    assert 86_000 < int(headers["Retry-After"]) <= 86_401
    with board.make_session() as session:
        assert session.query(db.Submission).count() == 3


def test_error_codes(countdown_board, tmp_path):
    url, board, token = countdown_board
    good = json.dumps(countdown_submission({"t0": "a"})).encode()
    assert post(url, good, None)[0] == 401
    assert post(url, good, "lb_nothere_secret")[0] == 401
    assert post(url, good, token[:-2] + "xx")[0] == 401
    # 422: schema errors with the field path; board mismatch.
    bad = countdown_submission({"t0": "a"})
    bad["metadata"]["sampling"]["temperature"] = "hot"
    code, answer, _ = post(url, json.dumps(bad).encode(), token)
    assert code == 422 and any(p.startswith("metadata.sampling.temperature:") for p in answer["problems"])
    wrong = countdown_submission({"t0": "a"})
    wrong["countdown"]["items"][0]["target"] = 25
    code, answer, _ = post(url, json.dumps(wrong).encode(), token)
    assert code == 422 and answer["problems"][0].startswith("countdown.items[0]: task 't0' is target 24")
    # 413: over the body limit, by Content-Length and without one (chunked).
    huge = countdown_submission({"t0": "x" * 300_000})
    code, answer, _ = post(url, json.dumps(huge).encode(), token)
    assert code == 413 and "limit of 200000 bytes" in answer["error"]
    chunks = iter([b"{" + b" " * 150_000, b" " * 150_000 + b"}"])
    request = urllib.request.Request(
        url, data=chunks, method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    request.add_header("Transfer-Encoding", "chunked")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 413
    assert post(url, good, token, key="x" * 200)[0] == 400
    # Revoked token: 401; a new one works.
    admin.token_revoke(board.make_session, "alpha")
    assert post(url, good, token)[0] == 401
    fresh = admin.token_issue(board.make_session, "alpha")
    assert post(url, good, fresh)[0] == 202
    # Closed board: 403, and the private split is revealed.
    admin.set_closed(board.make_session, True)
    assert post(url, json.dumps(countdown_submission({"t1": "b"})).encode(), fresh)[0] == 403
    assert json.loads(get(f"{url}/api/leaderboard")[1])["split"] == PRIVATE
    # Another team cannot read this team's submission.
    other = admin.team_add(board.make_session, "beta")
    assert get(f"{url}/api/submissions/1", other)[0] == 404
    assert get(f"{url}/prompts/secret.jsonl")[0] == 404


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'{"schema_version": 1, "metadata": NaN}', "metadata"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"schema_version": 1}', "metadata: is missing"),
        (b"\xff\xfe not json", "not valid JSON"),
        (b'{"schema_version": 1, "metadata": {"seed": 1' + b"0" * 5000 + b"}}", "metadata.seed"),
    ],
)
def test_hostile_payloads_are_422_with_a_reason(countdown_board, body, fragment):
    url, _board, token = countdown_board
    code, answer, _ = post(url, body, token)
    assert code == 422
    assert fragment in json.dumps(answer)


def test_nan_inside_a_scored_field_is_refused(countdown_board):
    url, _board, token = countdown_board
    text = json.dumps(countdown_submission({"t0": "a"})).replace('"temperature": 0.0', '"temperature": NaN')
    code, answer, _ = post(url, text.encode(), token)
    assert code == 422 and any("metadata.sampling.temperature" in p for p in answer["problems"])


HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>&amp;\"'"


def test_hostile_names_and_methods_are_escaped_on_every_page(countdown_board):
    url, board, _token = countdown_board
    token = admin.team_add(board.make_session, HOSTILE[:64])
    body = json.dumps(countdown_submission({"t0": "<answer>4*6*1</answer>"}, method=HOSTILE)).encode()
    code, answer, _ = post(url, body, token)
    assert code == 202
    wait_until(lambda: status_of(url, token, answer["id"])["status"] == "scored")
    for page in ("/", "/teams/2"):
        html = get(url + page)[1].decode()
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(" in html
    for name in ("$\\frac{1}{0}$", "_hidden", "$x^{2$"):  # mathtext and legend traps in the plot
        other = admin.team_add(board.make_session, name)
        body = json.dumps(countdown_submission({"t1": f"<answer>{name}</answer>"})).encode()
        code, answer, _ = post(url, body, other)
        wait_until(lambda a=answer, t=other: status_of(url, t, a["id"])["status"] == "scored")
    code, png = get(url + "/plot.png")
    assert code == 200 and png.startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="printable"):
        admin.team_add(board.make_session, "bad\nname")
    with pytest.raises(ValueError, match="1-64"):
        admin.team_add(board.make_session, "x" * 65)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(
        ["metadata.method", "metadata.model", "countdown.items.0.completion", "metadata.team"]
    ),
    value=st.one_of(
        st.text(max_size=200), st.integers(), st.floats(), st.none(), st.lists(st.integers(), max_size=3)
    ),
)
def test_any_value_in_a_field_is_accepted_or_refused_cleanly(countdown_board, path, value):
    url, board, _ = countdown_board
    token = admin.token_issue(board.make_session, "alpha")
    with board.make_session() as session, session.begin():
        session.get(db.Team, 1).daily_limit = 10_000
    data = copy.deepcopy(countdown_submission({"t0": "<answer>4*6*1</answer>"}))
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    body = json.dumps(data, allow_nan=True).encode()
    code, answer, _ = post(url, body, token)
    assert code in (200, 202, 422), answer
    if code == 422:
        assert answer["problems"] and all(isinstance(p, str) for p in answer["problems"])
    assert get(url + "/")[0] == 200


# ----------------------------------------------------------------------------------------------------------
# UltraFeedback through a judge endpoint; judge failures
# ----------------------------------------------------------------------------------------------------------


def _fixture_uf_rows(n: int) -> list[dict]:
    rows = ultrafeedback_fixture_rows("test_prefs")[:n]
    # The reference is the rejected (wrong) answer: a right answer must beat it.
    return [{"prompt": r["prompt"], "reference": r["rejected"][-1]["content"]} for r in rows]


def _uf_submission(rows: list[dict], replies: list[str]) -> dict:
    items = [
        {"id": hashlib.sha256(r["prompt"].encode()).hexdigest(), "prompt": r["prompt"], "response": reply}
        for r, reply in zip(rows, replies, strict=True)
    ]
    return {
        "schema_version": 1,
        "metadata": submission_metadata(),
        "ultrafeedback": {"prompt_source": {}, "items": items},
    }


def test_ultrafeedback_win_rate_through_the_verifiable_judge(tmp_path):
    fixture = ultrafeedback_fixture_rows("test_prefs")[:8]
    rows = _fixture_uf_rows(8)
    for i, row in enumerate(rows):
        row["split"] = PUBLIC if i % 2 == 0 else PRIVATE
    sets = load_sets(None, _write_jsonl(tmp_path / "uf.jsonl", rows))
    right = [r["chosen"][-1]["content"] for r in fixture]
    with RewardServer(build_scorer(judge="verifiable"), port=0) as judge_server:
        client = RewardClient(judge_server.url, judge_server.scorer.served_model_name, max_retries=0)
        judge = Judge(client, 4096, "verifiable")
        make_session = open_database(f"sqlite:///{tmp_path / 'b.db'}")
        token = admin.team_add(make_session, "alpha")
        board = Board(
            make_session, sets, ScoringWorker(make_session, sets, judge, poll_s=0.05), rank_by="ultrafeedback"
        )
        with LeaderboardServer(board, port=0) as server:
            # Right answers to the first six, the last two left out (losses).
            body = json.dumps(_uf_submission(rows[:6], right[:6])).encode()
            code, answer, _ = post(server.url, body, token)
            assert code == 202
            result = wait_until(
                lambda: (s := status_of(server.url, token, answer["id"]))["status"] == "scored" and s
            )
            public = result["scores"]["ultrafeedback"][PUBLIC]
            assert (public["n"], public["wins"], public["missing"]) == (4, 3, 1)
            assert (
                public["win_rate"] == 0.75
                and 0 < public["win_rate_ci95"][0] < 0.75 < public["win_rate_ci95"][1]
            )
            admin.set_closed(make_session, True)
            private = status_of(server.url, token, answer["id"])["scores"]["ultrafeedback"][PRIVATE]
            assert (private["wins"], private["missing"]) == (3, 1)


def test_judge_failure_is_retried_then_failed_with_the_reason_never_zero(tmp_path):
    rows = _fixture_uf_rows(2)
    sets = load_sets(None, _write_jsonl(tmp_path / "uf.jsonl", rows))
    dead = RewardClient("http://127.0.0.1:9/v1", "judge", max_retries=0, timeout_s=2)
    make_session = open_database(f"sqlite:///{tmp_path / 'b.db'}")
    token = admin.team_add(make_session, "alpha")
    worker = ScoringWorker(make_session, sets, Judge(dead, 4096, "dead"), poll_s=0.05, retry_backoff_s=0.05)
    with LeaderboardServer(Board(make_session, sets, worker), port=0) as server:
        code, answer, _ = post(server.url, json.dumps(_uf_submission(rows, ["a", "b"])).encode(), token)
        assert code == 202
        result = wait_until(
            lambda: (s := status_of(server.url, token, answer["id"]))["status"] == "failed" and s
        )
    assert result["attempts"] == 3
    assert "failed after 3 attempts" in result["error"] and "could not score" in result["error"]
    assert result["scores"] == {}
    with make_session() as session:
        row = session.get(db.Submission, answer["id"])
        assert row.public_winrate is None and row.scores is None


# ----------------------------------------------------------------------------------------------------------
# Durability, concurrency, the admin log
# ----------------------------------------------------------------------------------------------------------


class HeldJudge:
    """A reward endpoint that holds every request until `release()`: scoring is stuck mid-way while it holds."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from eval.reward_server import completion_body

        self.release_event, self.requests = threading.Event(), 0
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, body: dict):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:  # the killed server's requests: nobody to answer
                    pass

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": "held", "max_model_len": 4096}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.requests += 1
                judge.release_event.wait(60)
                reply = body["messages"][-1]["content"]
                self._send(completion_body("held", float(len(reply)), 10))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release_event.set()
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_process(tmp_path: Path, judge_url: str, port: int):
    import os
    import subprocess
    import sys

    command = [
        sys.executable, "-m", "leaderboard.app", "--database_url", f"sqlite:///{tmp_path / 'b.db'}",
        "--ultrafeedback_set", str(tmp_path / "uf.jsonl"), "--reward_url", judge_url, "--reward_model", "held",
        "--reward_cache", "", "--port", str(port), "--lease_s", "1",
    ]  # fmt: skip
    env = dict(os.environ, REWARD_API_KEY="")
    log = tmp_path / f"server-{time.monotonic_ns()}.log"  # a file: an unread pipe would block the server
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: get(f"http://127.0.0.1:{port}/health")[0] == 200 if _up(port) else False, 60, 0.2)
    except AssertionError:
        process.kill()
        raise AssertionError(log.read_text()[-2000:]) from None
    return process


def _up(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_kill_9_mid_scoring_loses_nothing_and_scoring_resumes_at_the_next_start(tmp_path):
    import signal

    rows = _fixture_uf_rows(2)
    _write_jsonl(tmp_path / "uf.jsonl", [rows[0] | {"split": PUBLIC}, rows[1] | {"split": PRIVATE}])
    make_session = open_database(f"sqlite:///{tmp_path / 'b.db'}")
    token = admin.team_add(make_session, "alpha")
    judge, port = HeldJudge(), _free_port()
    try:
        server = _serve_process(tmp_path, judge.url, port)
        body = json.dumps(_uf_submission(rows, ["a much longer answer than any reference could be" * 5, "b"]))
        code, answer, _ = post(f"http://127.0.0.1:{port}/", body.encode(), token)
        assert code == 202  # acknowledged, so stored
        wait_until(lambda: judge.requests > 0)  # scoring has started and is stuck in the judge
        with make_session() as session:
            assert session.get(db.Submission, answer["id"]).status == db.SCORING
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        judge.release_event.set()
        server = _serve_process(tmp_path, judge.url, port)
        try:
            result = wait_until(
                lambda: (
                    (s := status_of(f"http://127.0.0.1:{port}", token, answer["id"]))["status"] == "scored"
                    and s
                ),
                timeout_s=60,
            )
        finally:
            server.kill()
            server.wait(10)
    finally:
        judge.close()
    assert result["attempts"] == 2
    public = result["scores"]["ultrafeedback"][PUBLIC]
    assert (public["n"], public["wins"]) == (1, 1)  # this judge rewards length: the long answer wins
    with make_session() as session:
        assert session.query(db.Submission).count() == 1


# A database server to run the concurrency test against too (its leaderboard tables are dropped first), e.g.
# LEADERBOARD_TEST_DATABASE_URL=postgresql+psycopg://user:password@127.0.0.1/lbtest (needs `pip install psycopg`).
SERVER_DATABASE = os.environ.get("LEADERBOARD_TEST_DATABASE_URL")


@pytest.mark.parametrize(
    "server_database",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.skipif(
                not SERVER_DATABASE, reason="set LEADERBOARD_TEST_DATABASE_URL to run it on a database server"
            ),
        ),
    ],
    ids=["sqlite", "server-database"],
)
def test_concurrent_submissions_from_several_teams_are_counted_exactly_once(tmp_path, server_database):
    sets = load_sets(_write_jsonl(tmp_path / "cd.jsonl", CD_ROWS), None)
    if server_database:
        db.Base.metadata.drop_all(db.make_engine(SERVER_DATABASE))
        make_session = open_database(SERVER_DATABASE)
    else:
        make_session = open_database(f"sqlite:///{tmp_path / 'b.db'}")
    teams = {f"team{i}": admin.team_add(make_session, f"team{i}", daily_limit=40) for i in range(4)}
    worker = ScoringWorker(make_session, sets, None, poll_s=0.05)
    with LeaderboardServer(Board(make_session, sets, worker), port=0) as server:
        jobs = []
        for name, token in teams.items():
            for k in range(50):  # 50 distinct submissions per team: 40 accepted, 10 over the limit
                body = json.dumps(countdown_submission({"t0": f"<answer>{name} {k}</answer>"})).encode()
                jobs.append((token, body))
        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(lambda job: post(server.url, job[1], job[0])[:2], jobs))
            # Resends of accepted ones: replays, never a second row.
            accepted = [job for job, (code, _) in zip(jobs, results, strict=True) if code == 202]
            replays = list(pool.map(lambda job: post(server.url, job[1], job[0])[0], accepted[:40]))
        codes = [code for code, _ in results]
        assert codes.count(202) == 160 and codes.count(429) == 40, sorted(set(codes))
        assert set(replays) == {200}
        ids = [answer["id"] for code, answer in results if code == 202]
        assert len(set(ids)) == 160
        wait_until(lambda: count_rows(make_session, db.Submission.status == db.SCORED) == 160, timeout_s=60)
        with make_session() as session:
            for token in teams.values():
                team = db.team_for_token(session, token)
                assert session.query(db.Submission).filter(db.Submission.team_id == team.id).count() == 40


def test_admin_log_keeps_no_secrets_and_the_cli_shows_a_token_once(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    assert admin.main(["--database_url", url, "team-add", "gamma", "--daily_limit", "2"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("lb_")
    assert admin.main(["--database_url", url, "token-revoke", "gamma"]) == 0
    assert admin.main(["--database_url", url, "close"]) == 0
    assert admin.main(["--database_url", url, "log"]) == 0
    log = capsys.readouterr().out
    secret = token.split("_", 2)[2]
    assert "team-add" in log and "token-revoke" in log and "close" in log
    assert secret not in log
    assert secret not in (tmp_path / "b.db").read_bytes().decode("latin-1")
    assert admin.main(["--database_url", url, "team-add", "gamma"]) == 2
    assert "exists" in capsys.readouterr().err
    assert admin.main(["--database_url", url, "set-limit", "nobody", "3"]) == 2


# ----------------------------------------------------------------------------------------------------------
# The round trip: eval.submit builds, downloads the board's prompts, uploads; the server scores
# ----------------------------------------------------------------------------------------------------------


def test_round_trip_from_eval_submit_to_a_scored_row(tmp_path, tiny_model_dir, monkeypatch, capsys):
    uf_rows = _fixture_uf_rows(3)
    sets = load_sets(
        _write_jsonl(tmp_path / "cd.jsonl", CD_ROWS), _write_jsonl(tmp_path / "uf.jsonl", uf_rows)
    )
    with RewardServer(build_scorer(judge="verifiable"), port=0) as judge_server:
        client = RewardClient(judge_server.url, judge_server.scorer.served_model_name, max_retries=0)
        make_session = open_database(f"sqlite:///{tmp_path / 'b.db'}")
        token = admin.team_add(make_session, "alpha")
        worker = ScoringWorker(make_session, sets, Judge(client, 4096, "verifiable"), poll_s=0.05)
        with LeaderboardServer(Board(make_session, sets, worker), port=0) as server:
            monkeypatch.setenv("LEADERBOARD_TOKEN", token)
            path = submit.main(
                [
                    "--model", str(tiny_model_dir), "--method", "sft", "--board_prompts", "--url", server.url,
                    "--output_dir", str(tmp_path / "subs"), "--no_progress",
                    "--countdown_max_new_tokens", "4", "--ultrafeedback_max_new_tokens", "4",
                ]
            )  # fmt: skip
            receipt = json.loads(path.with_suffix(".receipt.json").read_text())
            assert receipt["status"] == 202
            sid = receipt["answer"]["id"]
            result = wait_until(lambda: (s := status_of(server.url, token, sid))["status"] == "scored" and s)
            table = json.loads(get(f"{server.url}/api/leaderboard")[1])["rows"]
    data = json.loads(path.read_text())
    assert [i["id"] for i in data["countdown"]["items"]] == [r["id"] for r in CD_ROWS]
    assert len(data["ultrafeedback"]["items"]) == 3
    assert result["scores"]["countdown"][PUBLIC]["n"] == 3
    public_uf = sum(i.split == PUBLIC for i in sets.ultrafeedback.values())
    assert result["scores"]["ultrafeedback"][PUBLIC]["n"] == public_uf
    assert table[0]["team"] == "alpha" and table[0]["submissions"] == 1
    assert token not in path.read_text() and token not in capsys.readouterr().out


def test_board_prompts_needs_a_board_that_serves_them(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as info:
        submit.main(["--method", "sft", "--board_prompts", "--url", "http://127.0.0.1:9", "--output_dir",
                     str(tmp_path)])  # fmt: skip
    assert info.value.code == 2
    assert "could not download the board's countdown prompts" in capsys.readouterr().err


def test_board_prompts_leave_out_a_task_the_board_does_not_score(
    countdown_board, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    url, board, token = countdown_board
    monkeypatch.setenv("LEADERBOARD_TOKEN", token)
    path = submit.main(
        [
            "--model", str(tiny_model_dir), "--method", "sft", "--board_prompts", "--url", url,
            "--output_dir", str(tmp_path / "subs"), "--no_progress", "--countdown_max_new_tokens", "4",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "serves no ultrafeedback prompts (404): ultrafeedback left out of this submission" in out
    data = json.loads(path.read_text())
    assert "ultrafeedback" not in data and len(data["countdown"]["items"]) == len(CD_ROWS)
    sid = json.loads(path.with_suffix(".receipt.json").read_text())["answer"]["id"]
    wait_until(lambda: status_of(url, token, sid)["status"] == "scored")


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--countdown_set", "nowhere.jsonl"], "countdown set not found: nowhere.jsonl"),
        ([], "needs at least one hidden set"),
        (["--ultrafeedback_set", "{uf}"], "has an ultrafeedback set but no judge"),
        (["--countdown_set", "{cd}", "--database_url", "nonsense"], "is not a database URL"),
        (
            ["--countdown_set", "{cd}", "--database_url", "postgresql+nodriver://u:hunter2@127.0.0.1/db"],
            "u:***@",
        ),
    ],
)
def test_server_start_errors_are_one_line_and_name_the_problem(tmp_path, capsys, extra, fragment):
    from leaderboard import app

    cd = _write_jsonl(tmp_path / "cd.jsonl", CD_ROWS)
    uf = _write_jsonl(tmp_path / "uf.jsonl", _fixture_uf_rows(2))
    argv = [a.format(cd=cd, uf=uf) for a in extra]
    if "--database_url" not in argv:
        argv += ["--database_url", f"sqlite:///{tmp_path / 'b.db'}"]
    with pytest.raises(SystemExit) as info:
        app.main([*argv, "--port", "0"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and fragment in err and "Traceback" not in err and "hunter2" not in err


def test_the_database_remembers_which_hidden_sets_it_was_scored_on(tmp_path):
    make_session = open_database(f"sqlite:///{tmp_path / 'b.db'}")
    with make_session() as session, session.begin():
        assert db.record_sets(session, '{"countdown": "a"}') is None
    with make_session() as session, session.begin():
        assert db.record_sets(session, '{"countdown": "a"}') is None  # same sets: nothing to say
    with make_session() as session, session.begin():
        assert db.record_sets(session, '{"countdown": "b"}') == '{"countdown": "a"}'

"""The local reward server: startup checks, Nemotron answer format, batching, auth and request errors."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from eval.reward_client import parse_reward
from eval.reward_server import (
    RewardModelError,
    RewardScorer,
    RewardServer,
    build_tiny_reward_model,
)
from posttrain.models import model_fingerprint
from rewards.reward_model import check_reward_model_dir

CONV = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "2 + 2 = 4."}]


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory) -> Path:
    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny-rm"))


@pytest.fixture(scope="module")
def scorer(tiny_rm_dir) -> RewardScorer:
    return RewardScorer(tiny_rm_dir)


def _post(url: str, body, headers: dict | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_startup_errors_name_the_problem(tmp_path, tiny_model_dir, tiny_rm_dir):
    with pytest.raises(RewardModelError, match="does not exist.*make rm-ultrafeedback"):
        check_reward_model_dir(tmp_path / "missing")
    with pytest.raises(RewardModelError, match="not a sequence-classification"):
        check_reward_model_dir(tiny_model_dir)  # a causal LM
    (tmp_path / "empty").mkdir()
    with pytest.raises(RewardModelError, match="no config.json"):
        check_reward_model_dir(tmp_path / "empty")
    two = tmp_path / "two-labels"
    two.mkdir()
    config = json.loads((tiny_rm_dir / "config.json").read_text())
    config["id2label"] = {"0": "a", "1": "b"}
    config.pop("num_labels", None)
    (two / "config.json").write_text(json.dumps(config))
    with pytest.raises(RewardModelError, match="2 labels"):
        check_reward_model_dir(two)


def test_batched_scores_equal_single_scores(scorer):
    convs = [
        CONV,
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
        ],
        [{"role": "user", "content": "x " * 50}, {"role": "assistant", "content": "y"}],
    ]
    batched = scorer.score(convs)
    single = [scorer.score([c])[0] for c in convs]
    assert batched == pytest.approx(single, abs=1e-4)
    assert len(set(round(x, 5) for x in batched)) == 3  # different conversations, different rewards


def test_http_answer_is_nemotron_format_and_concurrent_requests_batch(scorer):
    expected = scorer.score([CONV])[0]
    with RewardServer(scorer, port=0, batch_size=8, batch_wait_ms=20) as server:
        status, body = _post(
            server.url + "/chat/completions", {"model": scorer.served_model_name, "messages": CONV}
        )
        assert status == 200
        content = body["choices"][0]["message"]["content"]
        assert content.startswith("reward:") and float(content[7:]) == pytest.approx(expected, abs=1e-4)
        assert body["choices"][0]["logprobs"]["content"][0]["token"] == "reward"
        assert parse_reward(body) == pytest.approx(expected, abs=1e-4)
        # The openai client's own object parses the same.
        from openai import OpenAI

        client = OpenAI(base_url=server.url, api_key="x", max_retries=0)
        completion = client.chat.completions.create(model=scorer.served_model_name, messages=CONV)
        assert parse_reward(completion) == pytest.approx(expected, abs=1e-4)
        models = client.models.list().data
        assert models[0].id == scorer.served_model_name and models[0].model_extra["max_model_len"] == 1024

        results: list[float] = []

        def worker():
            results.append(parse_reward(_post(server.url + "/chat/completions", {"messages": CONV})[1]))

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == pytest.approx([expected] * 8, abs=1e-4)


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"{not json", 400, "not valid JSON"),
        ({"messages": []}, 400, "non-empty list"),
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "last message must be the assistant"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "role must be one of"),
        ({"messages": [{"role": "user", "content": 5}, CONV[1]]}, 400, "content must be a string"),
        ({"model": "other", "messages": CONV}, 404, "does not exist"),
        (
            {"messages": [CONV[0], {"role": "assistant", "content": "word " * 3000}]},
            400,
            "over the model's limit",
        ),
    ],
)
def test_bad_requests_get_openai_style_errors(scorer, body, status, fragment):
    with RewardServer(scorer, port=0) as server:
        got, answer = _post(server.url + "/chat/completions", body)
    assert got == status
    assert fragment in answer["error"]["message"]


def test_api_key_is_required_when_configured(scorer):
    with RewardServer(scorer, port=0, api_key="s3cret") as server:
        assert _post(server.url + "/chat/completions", {"messages": CONV})[0] == 401
        assert (
            _post(server.url + "/chat/completions", {"messages": CONV}, {"Authorization": "Bearer nope"})[0]
            == 401
        )
        status, body = _post(
            server.url + "/chat/completions", {"messages": CONV}, {"Authorization": "Bearer s3cret"}
        )
        assert status == 200 and "reward:" in body["choices"][0]["message"]["content"]


def test_port_in_use_is_a_clear_error(scorer):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(RewardModelError, match="another server may be using the port"):
            RewardServer(scorer, port=port)


def _raw(port: int, head: bytes, body: bytes = b"", timeout_s: float = 5) -> tuple[int, bytes]:
    """Send hand-written bytes; (status, body) of the answer, which must come within the socket timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)  # socket.timeout here: the server is stuck on this request
            if not chunk:
                break
            data += chunk
        head_in, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(h.split(b":")[1])
                for h in head_in.split(b"\r\n")
                if h.lower().startswith(b"content-length")
            ),
            0,
        )
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return int(head_in.split()[1]), rest[:length]


def _post_head(*content_lengths: str) -> bytes:
    lines = "".join(f"Content-Length: {v}\r\n" for v in content_lengths)
    return f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{lines}\r\n".encode()


BODY = json.dumps({"messages": CONV}).encode()


@pytest.mark.parametrize("content_length", ["-1", "-5", "abc", "1.5", "+10", "1_0", "\uff11"])
def test_bad_content_length_is_a_prompt_400(scorer, content_length):
    with RewardServer(scorer, port=0) as server:
        started = time.monotonic()
        head = _post_head(content_length.encode("utf-8").decode("latin-1"))
        assert _raw(server.port, head, BODY)[0] == 400
        assert time.monotonic() - started < 3
        # The server still works afterwards, and an exact length is accepted.
        assert _raw(server.port, _post_head(str(len(BODY))), BODY)[0] == 200


def test_two_different_content_lengths_are_refused(scorer):
    with RewardServer(scorer, port=0) as server:
        assert _raw(server.port, _post_head(str(len(BODY)), "5"), BODY)[0] == 400
        assert _raw(server.port, _post_head("5", str(len(BODY))), BODY)[0] == 400


def test_a_body_shorter_than_its_content_length_times_out(scorer):
    with RewardServer(scorer, port=0, body_timeout_s=0.5) as server:
        started = time.monotonic()
        status, body = _raw(server.port, _post_head(str(len(BODY) + 10)), BODY)
        assert status == 408 and "did not arrive within 0.5 s" in json.loads(body)["error"]["message"]
        assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"messages": [], "n": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b'{"messages": "\xff"}', "not valid JSON"),
    ],
)
def test_hostile_json_is_a_400_not_a_500(scorer, payload, fragment):
    with RewardServer(scorer, port=0) as server:
        status, body = _raw(server.port, _post_head(str(len(payload))), payload)
    assert status == 400 and fragment in json.loads(body)["error"]["message"]


def test_half_open_connections_pile_up_no_threads_and_no_tracebacks(scorer, caplog):
    with RewardServer(scorer, port=0) as server:
        assert _raw(server.port, _post_head(str(len(BODY))), BODY)[0] == 200  # the worker pool is warm
        threads_before = threading.active_count()
        sockets = []
        try:
            for i in range(300):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                # Half a request: headers unfinished, or a body that never comes.
                sock.sendall(_post_head(str(len(BODY)))[: 30 if i % 2 else None])
                sockets.append(sock)
            started = time.monotonic()
            assert _raw(server.port, _post_head(str(len(BODY))), BODY)[0] == 200
            assert time.monotonic() - started < 5
            assert threading.active_count() - threads_before < 20  # the old server: one thread each
        finally:
            for sock in sockets:
                sock.close()
        time.sleep(0.3)
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)


class _CountingScorer:
    """The real scorer, recording the size of every model call."""

    def __init__(self, inner: RewardScorer):
        self.inner, self.calls = inner, []
        self.served_model_name, self.max_length, self.path = (
            inner.served_model_name,
            inner.max_length,
            inner.path,
        )

    def encode(self, messages):
        return self.inner.encode(messages)

    def score_ids(self, batch):
        self.calls.append(len(batch))
        return self.inner.score_ids(batch)


def test_concurrent_requests_share_one_model_call_with_the_scores_of_alone(scorer):
    convs = [
        [
            {"role": "user", "content": f"Question {i}: " + "why? " * i},
            {"role": "assistant", "content": "x" * (3 * i)},
        ]
        for i in range(8)
    ]
    alone = [scorer.score([c])[0] for c in convs]
    counting = _CountingScorer(scorer)
    results: dict[int, float] = {}
    with RewardServer(counting, port=0, batch_size=8, batch_wait_ms=500) as server:
        url = server.url + "/chat/completions"

        def ask(i):
            results[i] = parse_reward(_post(url, {"messages": convs[i]})[1])

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert max(counting.calls) > 1 and sum(counting.calls) == 8  # batched: fewer model calls than requests
    assert [results[i] for i in range(8)] == pytest.approx(alone, abs=1e-4)
    assert len({round(x, 4) for x in alone}) >= 6  # different rewards: a mixed-up order would show


class _ConstantScorer:
    served_model_name = "const-rm"
    max_length = 1024
    path = Path("const-rm")

    def __init__(self, value: float):
        self.value = value

    def encode(self, messages):
        return [1, 2, 3]

    def score_ids(self, batch):
        return [self.value] * len(batch)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_score_is_an_error_not_nonstandard_json(value):
    with RewardServer(_ConstantScorer(value), port=0) as server:
        status, body = _raw(server.port, _post_head(str(len(BODY))), BODY)
    assert status == 500 and b"reward:" not in body and b"NaN" not in body and b"Infinity" not in body
    assert "non-finite score" in json.loads(body)["error"]["message"]  # strict JSON: parses without NaN


class _SlowScorer:
    """Stands in for RewardScorer: a constant reward after a delay (a model stuck on a long batch)."""

    served_model_name = "slow-rm"
    max_length = 1024
    path = Path("slow-rm")

    def __init__(self, delay_s: float):
        self.delay_s, self.scored = delay_s, 0

    def encode(self, messages):
        return [1, 2, 3]

    def score_ids(self, batch):
        time.sleep(self.delay_s)
        self.scored += len(batch)
        return [0.5] * len(batch)


def test_a_score_that_takes_too_long_is_a_503_and_the_worker_survives():
    slow = _SlowScorer(0.6)
    with RewardServer(slow, port=0, batch_size=1, result_timeout_s=0.2) as server:
        url = server.url + "/chat/completions"
        results: list[tuple[int, dict]] = []
        threads = [
            threading.Thread(target=lambda: results.append(_post(url, {"messages": CONV}))) for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [status for status, _ in results] == [503, 503, 503]
        assert "no score within 0.2 s" in results[0][1]["error"]["message"]
        # The worker survived the cancelled requests (setting a cancelled future's result would have killed it):
        # once the stuck batch is done, requests are scored again.
        slow.delay_s = 0.0
        deadline = time.monotonic() + 5
        status, body = _post(url, {"messages": CONV})
        while status == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
            status, body = _post(url, {"messages": CONV})
        assert status == 200 and parse_reward(body) == 0.5


def test_fingerprint_covers_weights_and_tokenizer_files(tmp_path, tiny_rm_dir):
    folder = tmp_path / "rm"
    shutil.copytree(tiny_rm_dir, folder)
    base = model_fingerprint(folder)
    assert (
        base == model_fingerprint(tiny_rm_dir) and len(base) == 8 and len(model_fingerprint(folder, 16)) == 16
    )
    template = folder / "tokenizer_config.json"
    original = template.read_text()
    template.write_text(original.replace("{", "{ ", 1))  # e.g. an edited chat template
    assert model_fingerprint(folder) != base
    template.write_text(original)
    assert model_fingerprint(folder) == base
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    assert model_fingerprint(folder) != base
    (folder / "chat_template.jinja").unlink()
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # same size, one bit of a weight
    weights.write_bytes(bytes(data))
    assert model_fingerprint(folder) != base


def test_an_oversized_body_is_refused_before_it_is_read(scorer, monkeypatch):
    import eval.reward_server as server_module

    monkeypatch.setattr(server_module, "MAX_BODY_BYTES", 100)
    with RewardServer(scorer, port=0) as server:
        big = json.dumps({"messages": CONV, "pad": "x" * 200}).encode()
        status, body = _raw(server.port, _post_head(str(len(big))), big)
        assert status == 413 and "over 100 bytes" in json.loads(body)["error"]["message"]
        # Chunked: no Content-Length to check up front, so the limit applies while reading.
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunked = f"{len(big):x}\r\n".encode() + big + b"\r\n0\r\n\r\n"
        assert _raw(server.port, head, chunked)[0] == 413


# ---------------------------------------------------------------- the verifiable judge (--judge verifiable)

CAPITAL = "What is the capital of France?"


@pytest.fixture(scope="module")
def judge():
    from eval.reward_server import build_scorer

    return build_scorer(judge="verifiable")


def _chat(prompt: str, reply: str, system: str | None = None) -> list[dict]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]


def test_judge_over_http_answers_like_the_reward_model(judge):
    cases = [
        (_chat(CAPITAL, "The capital of France is Paris."), 1.0),
        (_chat(CAPITAL, "The capital of France is Madrid."), 0.0),
        (_chat(CAPITAL, "<answer>(74 - 9) + 48</answer>"), -1.0),  # what a Countdown-only model says
        (_chat("Is 719 even or odd?", "719 is odd.", system="You are a helpful assistant."), 1.0),
    ]
    with RewardServer(judge, port=0, batch_size=4, batch_wait_ms=20) as server:
        for messages, expected in cases:
            status, body = _post(
                server.url + "/chat/completions", {"model": "verifiable-judge-v1", "messages": messages}
            )
            assert status == 200 and body["model"] == "verifiable-judge-v1"
            assert body["choices"][0]["message"]["content"] == f"reward:{expected!r}"
            assert parse_reward(body) == expected
        from openai import OpenAI

        client = OpenAI(base_url=server.url, api_key="x", max_retries=0)
        completion = client.chat.completions.create(model="verifiable-judge-v1", messages=cases[0][0])
        assert parse_reward(completion) == 1.0
        (model,) = client.models.list().data
        assert model.id == "verifiable-judge-v1" and model.model_extra["max_model_len"] == 32768
        results: dict[int, float] = {}

        def ask(i):
            results[i] = parse_reward(
                _post(server.url + "/chat/completions", {"messages": cases[i % 4][0]})[1]
            )

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [results[i] for i in range(8)] == [cases[i % 4][1] for i in range(8)]


def test_judge_refuses_prompts_of_no_fixture_family_and_keeps_the_rm_checks(judge):
    with RewardServer(judge, port=0, api_key="s3cret") as server:
        url, auth = server.url + "/chat/completions", {"Authorization": "Bearer s3cret"}
        assert _post(url, {"messages": _chat(CAPITAL, "Paris")})[0] == 401
        status, body = _post(url, {"messages": _chat("Write a haiku about autumn.", "Leaves fall.")}, auth)
        assert status == 400
        message = body["error"]["message"]
        assert "arithmetic" in message and "capital" in message and "--rm" in message
        assert body["error"]["param"] == "messages"
        assert _post(url, {"messages": _chat(CAPITAL, "Paris")[:1]}, auth)[0] == 400  # no reply to score
        assert _post(url, {"model": "other", "messages": _chat(CAPITAL, "Paris")}, auth)[0] == 404
        assert _post(url, {"messages": _chat(CAPITAL, "Paris")}, auth)[0] == 200


def test_build_scorer_and_the_command_line_need_exactly_one_of_rm_and_judge(capsys):
    from eval.reward_server import VerifiableJudgeScorer, build_scorer, main

    with pytest.raises(ValueError, match="exactly one"):
        build_scorer()
    with pytest.raises(ValueError, match="exactly one"):
        build_scorer(rm="x", judge="verifiable")
    with pytest.raises(ValueError, match="unknown judge"):
        build_scorer(judge="llm")
    with pytest.raises(TypeError, match="device"):
        build_scorer(judge="verifiable", device="cpu")
    scorer = build_scorer(judge="verifiable", max_length=None, served_model_name=None)
    assert isinstance(scorer, VerifiableJudgeScorer) and scorer.max_length == 32768
    assert scorer.score([_chat(CAPITAL, "Paris"), _chat(CAPITAL, "Rome")]) == [1.0, 0.0]
    for argv, fragment in [
        ([], "one of --rm FOLDER"),
        (["--rm", "x", "--judge", "verifiable"], "not allowed with argument"),
        (["--judge", "verifiable", "--dtype", "float16"], "--rm) only"),
        (["--judge", "llm"], "invalid choice"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and fragment in capsys.readouterr().err

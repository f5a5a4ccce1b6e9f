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
    check_reward_model_dir,
)
from posttrain.models import model_fingerprint

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


def _raw_request(port: int, content_length: str, body: bytes = b"") -> tuple[int, dict]:
    """Send a POST with a hand-written Content-Length; the answer must come back within the socket timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {content_length}\r\n\r\n".encode()
            + body
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)  # socket.timeout here: the server is blocked reading the body
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(
            next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        )
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return int(head.split()[1]), json.loads(rest[:length])


@pytest.mark.parametrize("content_length", ["-1", "-5", "abc", "1.5", "+10", "1_0", "\uff11"])
def test_bad_content_length_is_a_prompt_400(scorer, content_length):
    body = json.dumps({"messages": CONV}).encode()
    with RewardServer(scorer, port=0) as server:
        port = server.httpd.server_address[1]
        started = time.monotonic()
        status, answer = _raw_request(port, content_length, body)
        assert time.monotonic() - started < 3
        assert status == 400 and "Content-Length must be a non-negative integer" in answer["error"]["message"]
        # The server still works afterwards, and an exact length is accepted.
        assert _raw_request(port, str(len(body)), body)[0] == 200


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

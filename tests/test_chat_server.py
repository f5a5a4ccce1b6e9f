"""The local OpenAI-compatible chat endpoint (eval.chat_server): the JSON-schema translation layer on its own,
then the real llama.cpp server on the embedded GGUF answering the `openai` client, the prompt generator and the
judge (skipped, with the reason, where the `chat` extra is not installed: `make chat-setup`)."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import pytest

from eval.chat_server import (
    MAX_REQUEST_BYTES,
    ChatServerError,
    JsonSchemaFormat,
    gguf_path,
    openai_response_format,
    wait_ready,
)

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None


def test_openai_json_schema_becomes_llama_cpp_form() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = {
        "model": "m",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    assert openai_response_format(body)["response_format"] == {"type": "json_object", "schema": schema}
    assert openai_response_format({"response_format": {"type": "json_schema"}})["response_format"] == {
        "type": "json_object"
    }
    for unchanged in ({"response_format": {"type": "json_object"}}, {"model": "m"}, [1, 2], "text", None):
        assert openai_response_format(unchanged) == unchanged


def test_unbounded_strings_get_the_servers_bound() -> None:
    from eval.chat_server import cap_strings

    schema = {
        "type": "object",
        "properties": {
            "scores": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "string", "enum": ["r1", "r2"]},
                "explanation": {"type": "string"},
                "note": {"type": "string", "maxLength": 20},
            }}},
        },
    }  # fmt: skip
    capped = cap_strings(schema, 100)["properties"]["scores"]["items"]["properties"]
    assert capped["explanation"]["maxLength"] == 100 and "maxLength" not in capped["id"]
    assert capped["note"]["maxLength"] == 20
    body = {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string"}}}}
    assert openai_response_format(body, 50)["response_format"]["schema"] == {
        "type": "string",
        "maxLength": 50,
    }
    assert openai_response_format(body)["response_format"]["schema"] == {"type": "string"}


def _call(
    method: str, path: str, body: bytes, chunk: int = 7
) -> tuple[list[dict], bytes | None, bytes | None]:
    """Drive an ASGI app by hand: the body in small chunks; returns what was sent and what the app received."""
    received: dict = {}

    async def inner(scope, receive, send):
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        received["body"] = b"".join(parts)
        received["length"] = dict(scope["headers"]).get(b"content-length")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)
    ]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-length", str(len(body)).encode())],
    }
    asyncio.run(JsonSchemaFormat(inner)(scope, receive, send))
    return sent, received.get("body"), received.get("length")


def test_layer_rewrites_chat_requests_only() -> None:
    body = json.dumps(
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}}
    ).encode()
    _, seen, length = _call("POST", "/v1/chat/completions", body)
    assert json.loads(seen) == {"response_format": {"type": "json_object", "schema": {"type": "object"}}}
    assert int(length) == len(seen)
    _, seen, _ = _call("POST", "/v1/completions", body)
    assert seen == body  # other routes pass untouched
    _, seen, _ = _call("POST", "/v1/chat/completions", b"{not json")
    assert seen == b"{not json"  # the server's own validation answers


def test_layer_refuses_an_oversized_body() -> None:
    sent, seen, _ = _call("POST", "/v1/chat/completions", b"x" * (MAX_REQUEST_BYTES + 10), chunk=1 << 20)
    assert seen is None and sent[0]["status"] == 413


def test_model_must_be_embedded_or_a_gguf_file(tmp_path) -> None:
    with pytest.raises(ChatServerError, match="vllm serve"):
        gguf_path("Qwen/Qwen2.5-0.5B-Instruct")
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(ChatServerError, match="give `embedded` or a .gguf file"):
        gguf_path(str(folder))
    assert gguf_path("embedded").name.endswith(".gguf")


def test_wait_ready_times_out_with_the_url() -> None:
    with pytest.raises(TimeoutError, match="127.0.0.1:9/v1"):
        wait_ready("http://127.0.0.1:9/v1", timeout_s=0.3, interval_s=0.1)


@pytest.mark.skipif(
    not HAVE_LLAMA, reason="llama-cpp-python (the `chat` extra) is not installed: make chat-setup"
)
@pytest.mark.timeout(300)
def test_real_endpoint_serves_client_generator_and_judge(tmp_path) -> None:
    import openai

    from eval.chat_server import ChatServer
    from posttrain.synthetic import load_prompts, main, read_card
    from rewards.judge import LLMJudgeReward

    with ChatServer("embedded", port=0, n_ctx=2048) as server:
        assert wait_ready(server.url, 30)["data"]
        client = openai.OpenAI(base_url=server.url, api_key="none")
        reply = client.chat.completions.create(
            model="embedded",
            messages=[{"role": "user", "content": "Name a colour."}],
            max_tokens=8,
            temperature=0,
        )
        assert isinstance(reply.choices[0].message.content, str) and reply.usage.completion_tokens <= 8

        out = tmp_path / "prompts"
        main(["--task", "recipes/refine/tasks/eli5.md", "--n", "6", "--output_dir", str(out), "--base_url", server.url,
              "--model", "embedded", "--concurrency", "2", "--quiet"])  # fmt: skip
        counts = read_card(out)["counts"]
        assert counts["unusable_answers"] == 0  # the grammar keeps a 135M model's JSON valid
        assert len(load_prompts(out, "train")) + len(load_prompts(out, "test")) >= 2

        judge = LLMJudgeReward(base_url=server.url, model="embedded", max_tokens=300, max_failed_calls=0)
        scores, _, ok = judge.judge_group(
            "Why is the sky blue?", ["Sunlight scatters off air.", "Bananas.", "Blue paint."]
        )
        assert ok and len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)

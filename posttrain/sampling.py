"""Sampling shared by evaluation and on-policy data: one `generate` for HF transformers and vLLM.

Prompts are either raw strings (tokenised as-is, with only the tokenizer's default special tokens) or
conversational message lists (rendered with the tokenizer's chat template and ``add_generation_prompt=True``;
the rendered text is then tokenised WITHOUT adding special tokens, since the template already holds them).

Backends
- ``hf``: batched ``model.generate`` with left padding (decoder-only models continue from the right edge, so
  padding must sit on the left), prompts sorted by length to waste less compute on padding, original order
  restored on return. Greedy when ``temperature == 0``. Generation stops at the tokenizer's EOS and every EOS
  id of the model's ``generation_config`` (e.g. SmolLM2's ``<|im_end|>``); special tokens are stripped from
  the text. The torch RNG is seeded inside ``torch.random.fork_rng`` so an in-process evaluation is
  reproducible and does not disturb the caller's (e.g. a trainer's) random state.
- ``vllm``: ``vllm.LLM(model, revision, seed)`` + ``vllm.SamplingParams``; ``llm.chat`` for conversational
  prompts and ``llm.generate`` for strings. Used for ``backend="vllm"``, or ``"auto"`` when vLLM is installed,
  CUDA is available and the model is given by name/path (a loaded model object always uses ``hf``). vLLM is
  imported lazily and is not exercised by the test suite (no GPU in CI). Its sampling is seeded but its
  numerics differ from HF, so compare scores only within one backend.

Batch size counts generated sequences (prompts x samples) per ``generate`` call; the default is 32 on CPU
and 64 on GPU (see `default_batch_size`). Greedy decoding with ``n > 1`` generates once and repeats the text,
since every sample would be identical.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from posttrain.models import load_causal_lm, load_tokenizer, resolve_model_name

logger = logging.getLogger(__name__)

Prompt = str | list[dict[str, Any]]

CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 64
BACKENDS = ("auto", "hf", "vllm")


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. ``temperature == 0`` is greedy; ``top_k == 0`` / ``top_p == 1`` disable filtering.

    ``batch_size`` is the number of sequences (prompts x ``n``) generated together; None: a device default.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    seed: int = 0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        def _int(name: str, minimum: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"SamplingParams.{name} must be an int >= {minimum}, got {value!r}")

        _int("max_new_tokens", 1)
        _int("top_k", 0)
        _int("n", 1)
        _int("seed", 0)
        if self.batch_size is not None:
            _int("batch_size", 1)
        if not self.temperature >= 0:  # also rejects NaN
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_batch_size(device: Any = None) -> int:
    """Sequences per `generate` call: 32 on CPU (more only adds padding waste), 64 on a GPU."""
    import torch

    if device is None:
        on_gpu = torch.cuda.is_available()
    else:
        on_gpu = torch.device(device).type != "cpu"
    return GPU_BATCH_SIZE if on_gpu else CPU_BATCH_SIZE


def is_conversational_prompts(prompts: Sequence[Prompt]) -> bool:
    """True when all prompts are message lists, False when all are strings; mixed or odd types raise."""
    kinds = set()
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            kinds.add("text")
        elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt):
            kinds.add("chat")
        else:
            raise ValueError(
                f"prompt {i} must be a string or a non-empty list of message dicts, "
                f"got {type(prompt).__name__}"
            )
    if len(kinds) > 1:
        raise ValueError("prompts mix raw strings and message lists; pass one kind per call")
    return kinds == {"chat"}


def render_prompts(prompts: Sequence[Prompt], tokenizer: Any) -> list[str]:
    """Prompt texts as the model sees them: chat template applied to message lists, strings unchanged."""
    if not is_conversational_prompts(prompts):
        return list(prompts)  # type: ignore[arg-type]
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            "conversational prompts need a tokenizer with a chat template; this tokenizer has none "
            "(use a raw-text prompt template such as --template base for base models)"
        )
    return [
        tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        for messages in prompts
    ]


def resolve_backend(backend: str, model: Any) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {list(BACKENDS)}")
    if backend != "auto":
        return backend
    if not isinstance(model, str):
        return "hf"
    import torch

    return "vllm" if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available() else "hf"


def generate(
    model_name_or_path_or_model: Any,
    prompts: Sequence[Prompt],
    params: SamplingParams | None = None,
    *,
    tokenizer: Any = None,
    backend: str = "auto",
    revision: str | None = None,
    dtype: str = "auto",
    progress: bool = True,
) -> list[list[str]]:
    """``params.n`` completions per prompt, in prompt order.

    ``model_name_or_path_or_model`` is a hub name, a local folder, ``"embedded"``, or an already loaded
    causal LM (then pass ``tokenizer`` too unless ``model.name_or_path`` points at one). A loaded model is
    used on its current device and dtype and put back into training mode afterwards if it was training; unwrap
    DDP/accelerate wrappers first (``accelerator.unwrap_model``). ``dtype`` only applies when loading by name:
    "auto" = bfloat16 on a bf16-capable GPU, float32 otherwise.
    """
    params = params or SamplingParams()
    prompts = list(prompts)
    if not prompts:
        return []
    is_conversational_prompts(prompts)  # validate early, before loading anything
    chosen = resolve_backend(backend, model_name_or_path_or_model)
    if chosen == "vllm":
        return _generate_vllm(model_name_or_path_or_model, prompts, params, revision=revision)
    model, tokenizer = load_hf_model(model_name_or_path_or_model, tokenizer, revision=revision, dtype=dtype)
    return _generate_hf(model, tokenizer, prompts, params, progress=progress)


# ----------------------------------------------------------------------------------------------------------
# HF transformers backend
# ----------------------------------------------------------------------------------------------------------


def _torch_dtype(dtype: str) -> Any:
    import torch

    if dtype == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; valid: ['auto', {', '.join(map(repr, names))}]")
    return names[dtype]


def load_hf_model(
    model: Any, tokenizer: Any = None, *, revision: str | None = None, dtype: str = "auto"
) -> tuple[Any, Any]:
    """(model, tokenizer): load by name/path (onto CUDA if available) or find a loaded model's tokenizer."""
    if isinstance(model, str):
        import torch

        if tokenizer is None:
            tokenizer = load_tokenizer(model, revision=revision)
        model = load_causal_lm(model, revision=revision, dtype=_torch_dtype(dtype))
        model.to("cuda" if torch.cuda.is_available() else "cpu")
        return model, tokenizer
    if not hasattr(model, "generate"):
        raise TypeError(
            f"expected a model name/path or a causal LM with .generate, got {type(model).__name__}"
        )
    if tokenizer is None:
        name = getattr(model, "name_or_path", "") or getattr(
            getattr(model, "config", None), "_name_or_path", ""
        )
        if not name:
            raise ValueError("a loaded model without name_or_path needs tokenizer=...")
        tokenizer = load_tokenizer(name, revision=revision)
    return model, tokenizer


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Union of the tokenizer's EOS and the generation config's EOS ids (chat models often differ)."""
    ids: list[int] = []
    candidates: list[Any] = [tokenizer.eos_token_id]
    gen_cfg = getattr(model, "generation_config", None)
    if gen_cfg is not None:
        candidates.append(gen_cfg.eos_token_id)
    for cand in candidates:
        for i in cand if isinstance(cand, (list, tuple)) else [cand]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("neither the tokenizer nor the model's generation_config defines an EOS token")
    return ids


def _model_device(model: Any) -> Any:
    import torch

    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def _generate_hf(
    model: Any, tokenizer: Any, prompts: list[Prompt], params: SamplingParams, *, progress: bool
) -> list[list[str]]:
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    conversational = is_conversational_prompts(prompts)
    texts = render_prompts(prompts, tokenizer)
    # The chat template already contains BOS etc.; raw strings get the tokenizer's default special tokens.
    encoded = [tokenizer(t, add_special_tokens=not conversational)["input_ids"] for t in texts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {i} is empty after tokenisation")

    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    samples = 1 if params.greedy else params.n  # greedy samples would all be identical
    device = _model_device(model)
    batch_size = params.batch_size or default_batch_size(device)
    prompts_per_batch = max(1, batch_size // samples)

    sampling = (
        {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k}
        if not params.greedy
        else {"do_sample": False}
    )
    gen_config = GenerationConfig(
        max_new_tokens=params.max_new_tokens,
        num_return_sequences=samples,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
        repetition_penalty=1.0,  # explicit so a model's generation_config cannot change the evaluation
        use_cache=True,
        **sampling,
    )

    # Longest first: the costliest batch runs first (an OOM shows at once) and similar lengths share a batch.
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    results: list[list[str]] = [[] for _ in prompts]
    was_training = bool(getattr(model, "training", False))
    model.eval()
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    bar = tqdm(
        total=len(prompts) * samples, desc="generate", unit="seq", disable=not progress, file=sys.stderr
    )
    try:
        with torch.random.fork_rng(devices=fork_devices), torch.inference_mode():
            torch.manual_seed(params.seed)
            for start in range(0, len(order), prompts_per_batch):
                idx = order[start : start + prompts_per_batch]
                width = max(len(encoded[i]) for i in idx)
                input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):  # left padding
                    ids = encoded[i]
                    input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                    attention_mask[row, width - len(ids) :] = 1
                out = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    generation_config=gen_config,
                )
                new_tokens = out[:, width:].tolist()
                for row, ids in enumerate(new_tokens):  # rows are prompt-major: p0s0, p0s1, ..., p1s0, ...
                    results[idx[row // samples]].append(_decode(tokenizer, ids, eos_ids))
                bar.update(len(new_tokens))
    finally:
        bar.close()
        if was_training:
            model.train()
    if samples != params.n:
        results = [r * params.n for r in results]
    return results


def _decode(tokenizer: Any, ids: list[int], eos_ids: list[int]) -> str:
    """Text up to (excluding) the first EOS; later tokens are padding."""
    eos = set(eos_ids)
    for pos, token in enumerate(ids):
        if token in eos:
            ids = ids[:pos]
            break
    return tokenizer.decode(ids, skip_special_tokens=True)


# ----------------------------------------------------------------------------------------------------------
# vLLM backend (GPU only; not exercised by the CPU test suite)
# ----------------------------------------------------------------------------------------------------------


def _generate_vllm(
    model: Any, prompts: list[Prompt], params: SamplingParams, *, revision: str | None
) -> list[list[str]]:
    if not isinstance(model, str):
        raise ValueError(
            "the vllm backend needs a model name or path, not a loaded model object; use backend='hf'"
        )
    try:
        import vllm
    except ImportError as exc:
        raise ImportError("backend='vllm' needs the `vllm` package (GPU only): pip install vllm") from exc

    sampling = vllm.SamplingParams(
        n=params.n,
        temperature=params.temperature,
        top_p=params.top_p,
        # vLLM disables top-k with -1 (older versions reject 0).
        top_k=params.top_k if params.top_k > 0 else -1,
        max_tokens=params.max_new_tokens,
        seed=params.seed,
    )
    llm = vllm.LLM(model=resolve_model_name(model), revision=revision, seed=params.seed)
    try:
        if is_conversational_prompts(prompts):
            outputs = llm.chat(
                [list(p) for p in prompts], sampling, add_generation_prompt=True, use_tqdm=True
            )
        else:
            outputs = llm.generate(list(prompts), sampling, use_tqdm=True)
        return [[o.text for o in out.outputs] for out in outputs]
    finally:
        # Free the engine's GPU memory before returning: a second call in this process (policy, then the
        # reference) would otherwise find the first engine's KV cache still allocated and run out of memory.
        # Every step is guarded: the helpers moved between vLLM versions.
        import gc

        try:  # the V1 engine runs its core in a subprocess that holds the GPU memory
            stop = getattr(getattr(getattr(llm, "llm_engine", None), "engine_core", None), "shutdown", None)
            if callable(stop):
                stop()
        except Exception as exc:  # cleanup must never hide the generation's own result or error
            logger.debug("vllm cleanup: engine_core.shutdown failed: %s", exc)
        del llm
        try:
            try:  # newer vLLM: one helper for the parallel groups, the process group and the cache
                from vllm.distributed import cleanup_dist_env_and_memory

                cleanup_dist_env_and_memory()
            except ImportError:
                from vllm.distributed.parallel_state import (
                    destroy_distributed_environment,
                    destroy_model_parallel,
                )

                destroy_model_parallel()
                destroy_distributed_environment()
        except Exception as exc:  # ImportError on versions without either, or nothing initialised
            logger.debug("vllm cleanup: distributed teardown skipped: %s", exc)
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception as exc:
            logger.debug("vllm cleanup: torch.cuda.empty_cache failed: %s", exc)

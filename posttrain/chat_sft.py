"""Chat SFT with the loss on every assistant turn (TRL's `assistant_only_loss`) for ChatML models.

TRL builds the loss mask from `{% generation %}` markers in the chat template. The models we train (SmolLM2,
the embedded default, and Qwen/Qwen2.5-0.5B) ship ChatML templates without them, so `training_chat_template`
finds a template that has them and renders exactly like the model's own:

1. the model's template, if it already has the markers;
2. TRL's training variant, when TRL recognises the template (Qwen2.5, Llama 3, ...);
3. otherwise a ChatML template with the markers, built here with the model's default system prompt.

Whichever is chosen is checked against the model's own template on probe conversations (and on the first rows
of the data) and rejected with a clear error if a single character differs, so a template we cannot reproduce
is never trained with a silently wrong mask. The training template is active only while `SFTTrainer` tokenizes
the data: checkpoints and the saved model keep the model's own template (no markers, which other engines may
not understand).

`max_length` cuts conversations at turn boundaries: trailing turns that do not fit are dropped and
a conversation whose first assistant turn does not fit is dropped whole, so every trained assistant turn ends
with its `<|im_end|>` (TRL's own truncation would cut a turn mid-sentence).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from posttrain.chat_data import FIXTURE_NAME, SMOLTALK_HUB_ID, load_smoltalk, resolve_source
from posttrain.models import load_tokenizer

logger = logging.getLogger(__name__)

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
# Rows of the offline fixture carry this `source` prefix (posttrain.chat_data.smoltalk_fixture_rows).
FIXTURE_SOURCE_PREFIX = "posttrain-fixture/"
# Rows of the data whose rendering is compared with the model's own template before training.
CHECKED_ROWS = 64

# Conversations the training template must render exactly like the model's own template: system prompt or not,
# one to three turns, content with leading/trailing whitespace, quotes, braces, template-like text, unicode.
PROBE_CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
    ],
    [
        {"role": "user", "content": "  leading and trailing spaces  "},
        {"role": "assistant", "content": "\nA line.\n\nAnother line.\n"},
        {
            "role": "user",
            "content": "Quotes: \"double\" 'single' and a backslash \\ and {{ braces }} {% x %}",
        },
        {"role": "assistant", "content": "Unicode: café, 東京, emoji 🙂, tab\there."},
        {"role": "user", "content": "One more?"},
        {"role": "assistant", "content": ""},
    ],
    [
        {"role": "system", "content": ""},
        {"role": "user", "content": "Empty system prompt."},
        {"role": "assistant", "content": "Fine."},
    ],
]
# Prompts (ending in a user turn) rendered with `add_generation_prompt=True`: inference must see the same text.
PROBE_PROMPTS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2 + 2?"}],
    PROBE_CONVERSATIONS[0] + [{"role": "user", "content": "And then?"}],
]


class ChatTemplateError(ValueError):
    """The model's chat template cannot be given assistant-only loss masks that we can verify."""


# ----------------------------------------------------------------------------------------------------------
# Training template
# ----------------------------------------------------------------------------------------------------------


def _template_text(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # templates shipped as named variants: `default` is the one used
        template = template.get("default")
    return template


def _render(
    tokenizer: Any, messages: list[dict], template: str | None, generation_prompt: bool = False
) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt, chat_template=template
    )


def chatml_default_system(tokenizer: Any) -> str | None:
    """The system prompt the model's ChatML template adds when a conversation has none (None: it adds none).

    Raises ChatTemplateError when the template does not render a user turn as ChatML.
    """
    probe = "PROBE-7f3a"
    text = _render(tokenizer, [{"role": "user", "content": probe}], None)
    user_turn = f"{IM_START}user\n{probe}{IM_END}\n"
    if text == user_turn:
        return None
    head = f"{IM_START}system\n"
    tail = f"{IM_END}\n{user_turn}"
    if text.startswith(head) and text.endswith(tail):
        return text[len(head) : -len(tail)]
    raise ChatTemplateError(
        "the model's chat template is not ChatML (it renders a user turn as "
        f"{text[:120]!r}); chat SFT here needs a ChatML model such as SmolLM2 or Qwen2.5, or a template with "
        "`{% generation %}` markers around each assistant message."
    )


def _jinja_string(text: str) -> str:
    """`text` as a Jinja string literal: printable ASCII as is, everything else as a \\U escape."""
    out = []
    for ch in text:
        if " " <= ch <= "~" and ch not in '"\\':
            out.append(ch)
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def chatml_training_template(default_system: str | None) -> str:
    """ChatML with `{% generation %}` around each assistant message and its `<|im_end|>` (not the newline)."""
    lines = []
    if default_system is not None:
        lines += [
            "{%- set default_system = " + _jinja_string(default_system) + " -%}",
            "{%- if messages and messages[0]['role'] != 'system' -%}",
            "{{- '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' -}}",
            "{%- endif -%}",
        ]
    lines += [
        "{%- for message in messages -%}",
        "{%- if message['role'] == 'assistant' -%}",
        "{{- '<|im_start|>assistant\\n' -}}",
        "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}",
        "{{- '\\n' -}}",
        "{%- else -%}",
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}",
        "{%- endif -%}",
        "{%- endfor -%}",
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}",
    ]
    return "\n".join(lines)


def check_same_rendering(
    tokenizer: Any,
    training_template: str,
    conversations: Sequence[list[dict]],
    *,
    what: str = "probe conversation",
    generation_prompt: bool = False,
) -> None:
    """Raise ChatTemplateError unless `training_template` renders every conversation exactly like the model's."""
    for i, messages in enumerate(conversations):
        own = _render(tokenizer, messages, None, generation_prompt)
        ours = _render(tokenizer, messages, training_template, generation_prompt)
        if own != ours:
            at = next(
                (j for j, (a, b) in enumerate(zip(own, ours, strict=False)) if a != b),
                min(len(own), len(ours)),
            )
            raise ChatTemplateError(
                f"the training chat template renders {what} {i} differently from the model's own template at "
                f"character {at}: model {own[max(0, at - 40) : at + 40]!r} vs training "
                f"{ours[max(0, at - 40) : at + 40]!r}. Masks would not match what the model sees at inference; "
                "give the model a template with `{% generation %}` markers (tokenizer.chat_template) instead."
            )


def training_chat_template(tokenizer: Any) -> str:
    """A chat template with `{% generation %}` markers that renders exactly like the tokenizer's own.

    Raises ChatTemplateError when there is none we can verify (no template, not ChatML, a difference on the
    probes, or a template whose mask leaves out the end-of-turn token).
    """
    from trl.chat_template_utils import (
        get_training_chat_template,
        has_generation_markers,
        is_chat_template_stop_token_trained,
    )

    own = _template_text(tokenizer)
    if not own:
        raise ChatTemplateError(
            "the model's tokenizer has no chat template; chat SFT needs one (SmolLM2 and Qwen2.5, base models "
            "included, ship a ChatML template)."
        )
    if has_generation_markers(own):
        template, origin = own, "the model's own (it has generation markers)"
    else:
        try:
            template, origin = get_training_chat_template(tokenizer), "TRL's training variant"
        except ValueError:  # TRL does not know this template
            template = None
        if template is None:
            template = chatml_training_template(chatml_default_system(tokenizer))
            origin = "ChatML with generation markers (posttrain.chat_sft)"
    check_same_rendering(tokenizer, template, PROBE_CONVERSATIONS)
    check_same_rendering(tokenizer, template, PROBE_PROMPTS, what="probe prompt", generation_prompt=True)
    if not is_chat_template_stop_token_trained(tokenizer, chat_template=template):
        raise ChatTemplateError(
            "the training chat template leaves the assistant's end-of-turn token out of the loss mask, so the "
            "model would never learn to stop; put it inside `{% generation %}...{% endgeneration %}`."
        )
    logger.info("Assistant-only loss with %s chat template (renders like the model's, verified).", origin)
    return template


@contextlib.contextmanager
def active_chat_template(tokenizer: Any, template: str) -> Iterator[None]:
    """Make `template` the tokenizer's chat template inside the block, and restore the model's own after it."""
    saved = tokenizer.chat_template
    tokenizer.chat_template = template
    try:
        yield
    finally:
        tokenizer.chat_template = saved


def assistant_spans(tokenizer: Any, messages: list[dict], template: str) -> tuple[list[int], list[list[int]]]:
    """(input_ids, [token ids of each assistant turn's loss span]) as TRL computes them for training."""
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, chat_template=template
    )
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    spans: list[list[int]] = []
    for i, (token, bit) in enumerate(zip(ids, mask, strict=True)):
        if bit:
            if i == 0 or not mask[i - 1]:
                spans.append([])
            spans[-1].append(token)
    return ids, spans


# ----------------------------------------------------------------------------------------------------------
# Fitting conversations into max_length at turn boundaries
# ----------------------------------------------------------------------------------------------------------

KEPT, CUT, DROPPED = 0, 1, 2


def _n_tokens(tokenizer: Any, messages: list[dict], template: str) -> int:
    # The same text and tokenizer call as TRL's tokenization (apply_chat_template, no extra special tokens).
    return len(tokenizer(_render(tokenizer, messages, template), add_special_tokens=False)["input_ids"])


def fit_conversation(
    messages: list[dict], tokenizer: Any, template: str, max_length: int | None
) -> tuple[list[dict] | None, int]:
    """(messages, status): unchanged when it fits, cut after the last assistant turn that fits, or None."""
    if max_length is None or _n_tokens(tokenizer, messages, template) <= max_length:
        return messages, KEPT
    ends = [i + 1 for i, m in enumerate(messages[:-1]) if m["role"] == "assistant"]  # the whole did not fit
    for end in reversed(ends):
        if _n_tokens(tokenizer, messages[:end], template) <= max_length:
            return messages[:end], CUT
    return None, DROPPED


def fit_to_max_length(
    dataset: Any,
    tokenizer: Any,
    template: str,
    max_length: int | None,
    *,
    name: str = "train",
    num_proc: int | None = None,
):
    """`dataset` with every conversation fitted into `max_length` tokens at turn boundaries; (dataset, counts)."""
    if max_length is None or len(dataset) == 0:
        return dataset, {"kept": len(dataset), "cut": 0, "dropped": 0}

    def fit_batch(batch: dict[str, list]) -> dict[str, list]:
        fitted, status = [], []
        for messages in batch["messages"]:
            new, code = fit_conversation(messages, tokenizer, template, max_length)
            fitted.append(new if new is not None else messages)
            status.append(code)
        return {"messages": fitted, "_fit_status": status}

    mapped = dataset.map(
        fit_batch,
        batched=True,
        num_proc=num_proc,
        desc=f"Fitting {name} conversations into {max_length} tokens",
    )
    codes = list(mapped["_fit_status"])
    counts = {"kept": codes.count(KEPT), "cut": codes.count(CUT), "dropped": codes.count(DROPPED)}
    fitted = mapped.filter(lambda row: row["_fit_status"] != DROPPED).remove_columns("_fit_status")
    if counts["cut"] or counts["dropped"]:
        logger.info(
            "%s: %d conversations cut after their last assistant turn within max_length=%d, %d dropped (their "
            "first assistant turn does not fit).",
            name,
            counts["cut"],
            max_length,
            counts["dropped"],
        )
    if len(fitted) == 0:
        raise ValueError(
            f"no {name} conversation fits into max_length={max_length} tokens; raise max_length."
        )
    return fitted, counts


# ----------------------------------------------------------------------------------------------------------
# Data and the recipe glue
# ----------------------------------------------------------------------------------------------------------


def is_chat_dataset(dataset: Any) -> bool:
    """True for conversational language-modeling data (a `messages` column), e.g. smol-smoltalk."""
    return "messages" in (dataset.column_names or [])


def data_source(dataset: Any) -> str:
    """`fixture` when the rows come from the project's offline fixture, else the smol-smoltalk hub id."""
    if "source" in dataset.column_names and len(dataset):
        if str(dataset[0]["source"]).startswith(FIXTURE_SOURCE_PREFIX):
            return FIXTURE_NAME
    return SMOLTALK_HUB_ID


def load_chat_sft_dataset(script_args: Any):
    """smol-smoltalk (hub at the pinned revision, or the offline fixture) as a train/test `DatasetDict`."""
    from datasets import DatasetDict

    # Resolved once for both splits (the loaders do not probe again), so train and test share one source; a run
    # that asked for every row (dataset_max_train_rows: null) never falls back to the fixture.
    source = resolve_source(
        script_args.dataset_name,
        SMOLTALK_HUB_ID,
        allow_fallback=script_args.dataset_max_train_rows is not None,
    )
    splits = {
        script_args.dataset_train_split: script_args.dataset_max_train_rows,
        script_args.dataset_test_split: script_args.dataset_max_test_rows,
    }
    return DatasetDict(
        {
            split: load_smoltalk(source, split, revision=script_args.dataset_revision, max_rows=max_rows)
            for split, max_rows in splits.items()
            if split
        }
    )


@dataclasses.dataclass
class ChatSFT:
    """What the SFT recipe needs for chat data: the tokenizer, its training template and the fitted data."""

    tokenizer: Any
    template: str
    dataset: Any
    info: dict

    def trainer_context(self) -> contextlib.AbstractContextManager:
        """Wrap `SFTTrainer(...)` in this: it tokenizes with the training template, and saves the model's own."""
        return active_chat_template(self.tokenizer, self.template)


def prepare_chat_sft(
    model_path: str, dataset: Any, training_args: Any, *, revision: str | None = None
) -> ChatSFT:
    """Tokenizer, verified training template and conversations fitted into `max_length`, for SFTTrainer.

    `revision` is the model's hub revision (`model_args.model_revision`); by default the one the trainer loads
    the model with (`training_args.model_init_kwargs["revision"]`, set by `prepare_model_args`), so the
    tokenizer and the weights come from the same commit.
    """
    if not training_args.assistant_only_loss:
        logger.warning(
            "assistant_only_loss is false: the loss covers system and user turns too. Set it to true to train "
            "on the assistant turns only."
        )
    if training_args.chat_template_path is not None:
        raise ValueError(
            f"chat_template_path={training_args.chat_template_path!r} is not supported by chat SFT: the model's "
            "own (ChatML) template is used and verified. Leave chat_template_path unset."
        )
    if training_args.max_length is not None and training_args.truncation_mode != "keep_start":
        raise ValueError(
            f"truncation_mode={training_args.truncation_mode!r} is not supported with chat data: conversations "
            "are cut after their last assistant turn that fits. Use truncation_mode: keep_start."
        )
    if revision is None:
        revision = (getattr(training_args, "model_init_kwargs", None) or {}).get("revision")
    tokenizer = load_tokenizer(model_path, revision=revision)
    template = training_chat_template(tokenizer)
    fitted, info = {}, {"fit": {}}
    for split, ds in dataset.items():
        if len(ds):
            rows = [ds[i]["messages"] for i in range(min(CHECKED_ROWS, len(ds)))]
            check_same_rendering(tokenizer, template, rows, what=f"{split} row")
        with training_args.main_process_first(desc=f"fitting {split} conversations"):
            fitted[split], info["fit"][split] = fit_to_max_length(
                ds,
                tokenizer,
                template,
                training_args.max_length,
                name=split,
                num_proc=training_args.dataset_num_proc,
            )
    first = next(iter(dataset.values()))
    info["data_source"] = data_source(first)
    return ChatSFT(tokenizer=tokenizer, template=template, dataset=type(dataset)(fitted), info=info)


def eval_metrics(trainer: Any) -> dict[str, float]:
    """Held-out loss and token accuracy on the assistant tokens (TRL masks the rest out of both)."""
    metrics = trainer.evaluate()
    keys = {"eval_loss": "loss", "eval_mean_token_accuracy": "token_accuracy"}
    return {name: round(float(metrics[key]), 4) for key, name in keys.items() if key in metrics}


def format_report(train_loss: float | None, before: dict | None, after: dict | None) -> str:
    """The numbers the chat SFT run measured, as a small plain-text table."""
    lines = [f"{'chat SFT (assistant tokens)':<30} {'before':>10} {'after':>10}"]
    if train_loss is not None:
        lines.append(f"{'train loss (run average)':<30} {'-':>10} {train_loss:>10.4f}")
    for name in after or before or {}:
        b, a = (before or {}).get(name), (after or {}).get(name)
        lines.append(
            f"{'held-out ' + name:<30} {'-' if b is None else f'{b:.4f}':>10} {'-' if a is None else f'{a:.4f}':>10}"
        )
    return "\n".join(lines)

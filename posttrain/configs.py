"""Argument dataclasses shared by the recipes (parsed together with TRL's own config classes by TrlParser).

Field names are prefixed (`countdown_*`, `warmstart_*`) so they never collide with TRL's fields in the one flat
YAML namespace that `TrlParser` builds from all dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import Seq2SeqTrainingArguments
from trl import ScriptArguments as TrlScriptArguments

from posttrain.countdown import PROMPT_TEMPLATES, WARMSTART_STYLES


@dataclass
class ScriptArguments(TrlScriptArguments):
    """TRL's script arguments; `dataset_name` unset means "generate Countdown tasks locally" (offline)."""

    dataset_revision: str | None = field(
        default=None,
        metadata={"help": "Pinned hub revision for `dataset_name` (defaults to the project's pin)."},
    )
    dataset_max_train_rows: int | None = field(
        default=None, metadata={"help": "Use at most this many training rows (None: all)."}
    )
    dataset_max_test_rows: int | None = field(
        default=None, metadata={"help": "Use at most this many test rows (None: all)."}
    )

    def __post_init__(self) -> None:
        if hasattr(super(), "__post_init__"):
            super().__post_init__()
        for name in ("dataset_max_train_rows", "dataset_max_test_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or unset, got {value}.")


@dataclass
class CountdownArguments:
    """How Countdown tasks are generated (offline default) and turned into prompts and SFT completions."""

    countdown_train_size: int = field(default=640, metadata={"help": "Number of generated training tasks."})
    countdown_test_size: int = field(
        default=200, metadata={"help": "Held-out tasks (never in train) used by the evaluation."}
    )
    countdown_num_numbers: list[int] = field(
        default_factory=lambda: [3], metadata={"help": "How many numbers per task, e.g. [3] or [3, 4]."}
    )
    countdown_validation_size: int = field(
        default=200,
        metadata={
            "help": "Validation tasks for choosing checkpoints during training (posttrain.data.validation_tasks: "
            "held-out space, disjoint from the evaluation tasks); 0 turns validation off."
        },
    )
    countdown_validation_steps: int = field(
        default=10, metadata={"help": "RL: greedy validation accuracy every this many steps."}
    )
    countdown_validation_load_best: bool = field(
        default=True,
        metadata={
            "help": "RL: save the weights of the step with the best validation accuracy (kept in output_dir/best) "
            "when the last step is worse, like transformers' load_best_model_at_end."
        },
    )
    countdown_min_number: int = field(default=1, metadata={"help": "Smallest number in a task."})
    countdown_max_number: int = field(default=30, metadata={"help": "Largest number in a task."})
    countdown_min_target: int = field(default=10, metadata={"help": "Smallest target."})
    countdown_max_target: int = field(default=100, metadata={"help": "Largest target."})
    countdown_data_seed: int = field(default=1234, metadata={"help": "Seed of the task generator and split."})
    prompt_template: str = field(
        default="chat", metadata={"help": f"Prompt template, one of {sorted(PROMPT_TEMPLATES)}."}
    )
    warmstart_think: bool = field(
        default=True,
        metadata={
            "help": "SFT completions reason in <think> with a visible search; false: direct solutions."
        },
    )
    warmstart_style: str = field(
        default="forward",
        metadata={
            "help": "SFT traces: forward (verified solution steps, optional failed tries) or backward (3 numbers: "
            "work back from the target; see posttrain.countdown.make_backward_completion)."
        },
    )
    warmstart_max_failed_tries: int = field(
        default=0, metadata={"help": "SFT traces: up to this many visible failed tries before the solution."}
    )
    warmstart_failed_trace_share: float = field(
        default=0.0, metadata={"help": "SFT traces: share of traces that never find the answer."}
    )
    genrm_lambda: float = field(
        default=0.1,
        metadata={
            "help": "GenRM SFT (a verification folder as dataset_name): lambda of the unified loss "
            "SFT(D_verify) + lambda * SFT(D_correct), trained as a data mixture with round(lambda * N) correct "
            "solutions per N verification examples (see posttrain.genrm.genrm_mixture); must be >= 0."
        },
    )

    def __post_init__(self) -> None:
        if self.prompt_template not in PROMPT_TEMPLATES:
            raise ValueError(
                f"prompt_template={self.prompt_template!r} is not known; use one of {sorted(PROMPT_TEMPLATES)}."
            )
        for name in ("countdown_train_size", "countdown_test_size", "countdown_validation_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.countdown_validation_steps < 1:
            raise ValueError(
                f"countdown_validation_steps must be >= 1, got {self.countdown_validation_steps} "
                "(fix: --countdown_validation_steps 10, or --countdown_validation_size 0 to turn validation off)."
            )
        if not self.countdown_num_numbers or any(n < 2 or n > 6 for n in self.countdown_num_numbers):
            raise ValueError(
                f"countdown_num_numbers={self.countdown_num_numbers} must list sizes between 2 and 6, e.g. [3, 4]."
            )
        if not 0.0 <= self.warmstart_failed_trace_share <= 1.0:
            raise ValueError(
                f"warmstart_failed_trace_share={self.warmstart_failed_trace_share} must be within [0, 1]."
            )
        if self.warmstart_max_failed_tries < 0:
            raise ValueError("warmstart_max_failed_tries must be >= 0.")
        if not self.genrm_lambda >= 0:  # also rejects NaN
            raise ValueError(f"genrm_lambda={self.genrm_lambda} must be >= 0 (0: verification data only).")
        if self.warmstart_style not in WARMSTART_STYLES:
            raise ValueError(
                f"warmstart_style={self.warmstart_style!r} is not known; use one of {list(WARMSTART_STYLES)}."
            )
        if (
            self.warmstart_style == "backward"
            and self.warmstart_think
            and set(self.countdown_num_numbers) != {3}
        ):
            raise ValueError(
                f"warmstart_style=backward writes traces for 3-number tasks only, got countdown_num_numbers="
                f"{self.countdown_num_numbers}; use warmstart_style=forward for other sizes."
            )

    def generator_kwargs(self) -> dict:
        """Keyword arguments for `posttrain.countdown.generate_tasks` (and `posttrain.data.train_tasks` / `heldout_tasks`)."""
        return dict(
            num_numbers=tuple(self.countdown_num_numbers),
            min_number=self.countdown_min_number,
            max_number=self.countdown_max_number,
            min_target=self.countdown_min_target,
            max_target=self.countdown_max_target,
        )


@dataclass
class Seq2SeqConfig(Seq2SeqTrainingArguments):
    """Seq2SeqTrainingArguments plus the input and target lengths, and TRL's `model_init_kwargs`."""

    max_source_length: int = field(
        default=384, metadata={"help": "Code tokens the encoder reads (truncated)."}
    )
    max_target_length: int = field(
        default=48, metadata={"help": "Summary tokens the decoder learns (truncated)."}
    )
    model_init_kwargs: dict[str, Any] | None = field(
        default=None, metadata={"help": "Keywords for from_pretrained (filled from the model arguments)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("max_source_length", "max_target_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

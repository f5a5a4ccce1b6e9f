"""In-training Countdown validation: greedy accuracy on a fixed validation set every N steps.

TRL's GRPO/RLOO log only the reward during training; this callback adds the task metric the final evaluation
measures (greedy accuracy, format rate) and the KL to the start model on the validation completions, logs them
beside TRL's metrics (TensorBoard, trainer_state.json) and keeps the best checkpoint by validation accuracy.
The validation tasks come from `posttrain.data.validation_tasks`: never trained on, disjoint from evaluation.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from posttrain.countdown import CountdownTask, make_prompt
from posttrain.io import atomic_write_json
from rewards.countdown import score

logger = logging.getLogger(__name__)

BEST_DIR = "best"
VALIDATION_FILE = "validation.json"


def _render(tokenizer: Any, prompts: Sequence[Any]) -> list[list[int]]:
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def greedy_completions(
    model: Any, tokenizer: Any, prompts: Sequence[Any], *, max_new_tokens: int, batch_size: int = 64
) -> list[list[int]]:
    """Greedy completion token ids (EOS excluded) for chat prompts; left padding, model's device."""
    import torch

    encoded = _render(tokenizer, prompts)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = next(model.parameters()).device
    out: list[list[int]] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        for row in gen[:, width:].tolist():
            out.append(row[: row.index(eos)] if eos in row else row)
    return out


def greedy_correct(
    model: Any, tokenizer: Any, tasks: Sequence[CountdownTask], template: str, *, max_new_tokens: int
) -> list[bool]:
    """Whether each task's greedy answer is right (one process, no training wrapper)."""
    import torch

    prompts = [make_prompt(t.nums, t.target, template) for t in tasks]
    model.eval()
    with torch.inference_mode():
        ids = greedy_completions(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [score(c, t.target, list(t.nums)) == 1.0 for c, t in zip(texts, tasks, strict=True)]


def token_kl(
    policy: Any, reference: Any, prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]]
) -> float:
    """Mean exact per-token KL(policy || reference) over the completion positions (full vocabulary)."""
    import torch

    total, count = 0.0, 0
    device = next(policy.parameters()).device
    for prompt, completion in zip(prompt_ids, completion_ids, strict=True):
        if not completion:
            continue
        ids = torch.tensor([prompt + completion], device=device)
        positions = slice(len(prompt) - 1, len(prompt) + len(completion) - 1)
        logp = torch.log_softmax(policy(ids).logits[0, positions].float(), -1)
        logq = torch.log_softmax(reference(ids).logits[0, positions].float(), -1)
        total += float((logp.exp() * (logp - logq)).sum())
        count += len(completion)
    return total / count if count else 0.0


class CountdownValidationCallback(TrainerCallback):
    """Every `every` steps (and at the start and end): greedy validation accuracy, format rate, KL to start.

    Call `bind(trainer)` after building the trainer. The metrics go into the next training log (so TensorBoard
    and trainer_state.json get them), `validation.json` in `output_dir`, and the best model into
    `output_dir/best` (kept only when it beats the start). Run on every process; each evaluates a shard.
    """

    def __init__(
        self,
        tasks: Sequence[CountdownTask],
        *,
        template: str,
        every: int,
        max_new_tokens: int,
        output_dir: str,
        keep_best: bool = True,
        kl_to_start: bool = True,
        batch_size: int = 64,
    ) -> None:
        if every < 1:
            raise ValueError(f"validation every={every}: must be >= 1 (fix: --validation_steps 20)")
        if not tasks:
            raise ValueError("no validation tasks (fix: --validation_size 200)")
        self.tasks = list(tasks)
        self.template = template
        self.every = every
        self.max_new_tokens = max_new_tokens
        self.output_dir = Path(output_dir)
        self.keep_best = keep_best
        self.kl_to_start = kl_to_start
        self.batch_size = batch_size
        self.trainer: Any = None
        self.reference: Any = None
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self._pending: dict[str, float] = {}

    def bind(self, trainer: Any) -> CountdownValidationCallback:
        self.trainer = trainer
        handler = trainer.callback_handler
        # First, so the metrics are in `logs` before TensorBoard and the progress bar read them.
        handler.callbacks = [self] + [c for c in handler.callbacks if c is not self]
        if self.kl_to_start and self.reference is None:
            # Taken before training (and before a resumed checkpoint is loaded): KL to the real start model.
            if (
                getattr(trainer, "is_deepspeed_enabled", False)
                and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
            ):
                logger.info("validation: no KL to the start model under ZeRO-3 (parameters are partitioned)")
                self.kl_to_start = False
            else:
                import copy

                self.reference = copy.deepcopy(trainer.accelerator.unwrap_model(trainer.model)).eval()
                for p in self.reference.parameters():
                    p.requires_grad_(False)
        return self

    # -- evaluation ---------------------------------------------------------------------------------------

    def _shard(self) -> tuple[int, int]:
        acc = self.trainer.accelerator
        return acc.process_index, acc.num_processes

    def evaluate(self, step: int) -> dict[str, float]:
        import torch
        from trl.models.utils import unwrap_model_for_generation

        trainer = self.trainer
        tokenizer = trainer.processing_class
        rank, world = self._shard()
        tasks = self.tasks[rank::world]
        prompts = [make_prompt(t.nums, t.target, self.template) for t in tasks]
        was_training = trainer.model.training
        trainer.model.eval()
        with (
            torch.inference_mode(),
            unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model,
        ):
            completions = greedy_completions(
                model, tokenizer, prompts, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size
            )
            kl = math.nan
            if self.reference is not None:
                kl = token_kl(model, self.reference, _render(tokenizer, prompts), completions)
        if was_training:
            trainer.model.train()
        rewards = [
            score(tokenizer.decode(c, skip_special_tokens=True), t.target, list(t.nums))
            for c, t in zip(completions, tasks, strict=True)
        ]
        stats = torch.tensor(
            [
                sum(r == 1.0 for r in rewards),
                sum(r > 0 for r in rewards),
                len(rewards),
                0.0 if math.isnan(kl) else kl * len(rewards),
            ],
            dtype=torch.float64,
            device=trainer.accelerator.device,
        )
        stats = trainer.accelerator.reduce(stats, reduction="sum")
        correct, formatted, n, kl_sum = stats.tolist()
        metrics = {"val/accuracy": correct / n, "val/format_rate": formatted / n}
        if self.reference is not None:
            metrics["val/kl_to_start"] = kl_sum / n
        return metrics

    def _record(self, state: Any, step: int) -> None:
        metrics = self.evaluate(step)
        self.history.append({"step": step, **metrics})
        state.log_history.append({"step": step, **metrics})
        self._pending = dict(metrics)
        accuracy = metrics["val/accuracy"]
        logger.info("step %d: validation accuracy %.3f (%d tasks)", step, accuracy, len(self.tasks))
        start = self.history[0]["val/accuracy"]
        if self.keep_best and step > 0 and accuracy > max(start, (self.best or {}).get("accuracy", -1.0)):
            best_dir = self.output_dir / BEST_DIR
            self.trainer.save_model(str(best_dir))
            self.best = {"step": step, "accuracy": accuracy, "path": str(best_dir)}
            if self.trainer.accelerator.is_main_process:
                self.trainer.processing_class.save_pretrained(str(best_dir))
                atomic_write_json(best_dir / "best.json", self.best)
        if self.trainer.accelerator.is_main_process:
            atomic_write_json(self.output_dir / VALIDATION_FILE, self.summary())

    def summary(self) -> dict[str, Any]:
        return {
            "n_tasks": len(self.tasks),
            "every": self.every,
            "history": self.history,
            "start_accuracy": self.history[0]["val/accuracy"] if self.history else None,
            "best": self.best,
        }

    # -- trainer events -----------------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer is None:
            raise RuntimeError("CountdownValidationCallback.bind(trainer) was not called")
        if not any(h["step"] == state.global_step for h in self.history):
            self._record(state, state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self._record(state, state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if logs is not None and self._pending:
            logs.update(self._pending)
            self._pending = {}

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.reference = None

    def load_best(self) -> dict[str, Any] | None:
        """Put the best validated weights back into the trainer's model (transformers' load_best_model_at_end
        for the task metric). Returns the best record, or None when the last step is as good as any."""
        if not self.best or not self.history or self.best["step"] == self.history[-1]["step"]:
            return None
        if self.history[-1]["val/accuracy"] >= self.best["accuracy"]:
            return None
        from safetensors.torch import load_file

        weights = Path(self.best["path"]) / "model.safetensors"
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        if not weights.is_file() or hasattr(model, "peft_config"):
            logger.warning(
                "validation: the best step's weights cannot be reloaded here; keeping the last step"
            )
            return None
        missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
        if unexpected or any("lm_head" not in k for k in missing):
            raise RuntimeError(
                f"validation: {weights} does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        logger.info(
            "validation: the saved model is step %d (accuracy %.3f)", self.best["step"], self.best["accuracy"]
        )
        return self.best


def read_validation(output_dir: str | Path) -> dict[str, Any] | None:
    path = Path(output_dir) / VALIDATION_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None

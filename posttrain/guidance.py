"""Guided GRPO rollouts for Countdown: a ground-truth solution joins the groups the policy cannot solve.

GRPO learns only from prompts whose group mixes right and wrong answers, so its updates lean on the tasks the
policy already solves sometimes. Off-policy guidance (LUFFY, Prefix-RFT in ../shared/seeds/rft-papers-list.txt)
puts one demonstration into each group with no correct sample, giving the hard tasks a signal too. This module
is a TRL `rollout_func`: it samples with the policy (HF generate) and swaps the last completion of an unsolved
group for the task's known solution.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from rewards.countdown import score

logger = logging.getLogger(__name__)


def prompt_key(prompt: Any) -> str:
    """The user turn of a chat prompt (or the raw text): how a rollout finds its task."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(str(m.get("content", "")) for m in prompt if m.get("role") == "user")


class GuidedRollout:
    """`rollout_func(prompts, trainer)` for TRL's GRPOTrainer (HF generation, no vLLM).

    `tasks` maps `prompt_key(prompt)` to (target, nums, solution). `stats` counts groups and guided groups.
    """

    def __init__(self, tasks: dict[str, tuple[int, list[int], str]], *, num_generations: int) -> None:
        if num_generations < 2:
            raise ValueError("guided rollouts need num_generations >= 2 (one slot is replaced)")
        self.tasks = tasks
        self.num_generations = num_generations
        self.stats = {"groups": 0, "guided": 0}

    def _demonstration(self, tokenizer: Any, solution: str) -> list[int]:
        ids = tokenizer(f"<answer>{solution}</answer>", add_special_tokens=False)["input_ids"]
        return ids + [tokenizer.eos_token_id]

    def __call__(self, prompts: Sequence[Any], trainer: Any) -> dict[str, Any]:
        import torch
        from trl.models.utils import unwrap_model_for_generation

        tokenizer = trainer.processing_class
        args = trainer.args
        texts = [
            tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts
        ]
        prompt_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        width = max(map(len, prompt_ids))
        ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(prompt_ids):
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
        with (
            torch.no_grad(),
            unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model,
        ):
            device = next(model.parameters()).device
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=args.max_completion_length,
                do_sample=True,
                temperature=args.temperature,
                top_k=args.top_k or 0,
                top_p=args.top_p,
                eos_token_id=eos,
                pad_token_id=pad,
            )
        completion_ids = []
        for row in out[:, width:].tolist():
            completion_ids.append(row[: row.index(eos) + 1] if eos in row else row)
        n = self.num_generations
        for start in range(0, len(prompts), n):
            task = self.tasks.get(prompt_key(prompts[start]))
            if task is None:
                continue
            target, nums, solution = task
            self.stats["groups"] += 1
            group = completion_ids[start : start + n]
            texts_ = [tokenizer.decode(c, skip_special_tokens=True) for c in group]
            if not any(score(t, target, nums) == 1.0 for t in texts_) and solution:
                completion_ids[start + n - 1] = self._demonstration(tokenizer, solution)
                self.stats["guided"] += 1
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}

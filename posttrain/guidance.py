"""Guided GRPO rollouts for Countdown: the greedy answer and/or a known solution join each prompt's group.

Two ways to aim GRPO's group comparison at what matters, as a TRL `rollout_func` (HF generate, no vLLM):
- `greedy`: the first slot of every group is the policy's greedy answer (what the evaluation scores), so a group
  compares the samples with the decision greedy decoding makes: a right sample beside a wrong greedy answer
  pushes the mode towards it, a wrong sample beside a right one keeps it.
- `solutions`: GRPO learns only from groups that mix right and wrong answers, so its updates lean on tasks the
  policy already solves sometimes. Off-policy guidance (LUFFY, Prefix-RFT in ../shared/seeds/rft-papers-list.txt)
  puts the task's known solution into the last slot of each group with no correct sample.
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

    def __init__(
        self,
        tasks: dict[str, tuple[int, list[int], str]],
        *,
        num_generations: int,
        greedy: bool = False,
        solutions: bool = True,
    ) -> None:
        if num_generations < 2 + int(greedy and solutions):
            raise ValueError("guided rollouts need num_generations >= 2 (slots are replaced) per guide")
        self.tasks = tasks
        self.num_generations = num_generations
        self.greedy = greedy
        self.solutions = solutions
        self.stats = {"groups": 0, "guided": 0, "greedy_right": 0}

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
            greedy_out = None
            if self.greedy:  # one greedy answer per group (TRL repeats each prompt n times in a row)
                firsts = list(range(0, len(prompt_ids), self.num_generations))
                greedy_out = model.generate(
                    input_ids=ids[firsts].to(device),
                    attention_mask=mask[firsts].to(device),
                    max_new_tokens=args.max_completion_length,
                    do_sample=False,
                    eos_token_id=eos,
                    pad_token_id=pad,
                )
        n = self.num_generations
        completion_ids = []
        for row in out[:, width:].tolist():
            completion_ids.append(row[: row.index(eos) + 1] if eos in row else row)
        if greedy_out is not None:
            for g, row in enumerate(greedy_out[:, width:].tolist()):
                completion_ids[g * n] = row[: row.index(eos) + 1] if eos in row else row
        for start in range(0, len(prompts), n):
            task = self.tasks.get(prompt_key(prompts[start]))
            if task is None:
                continue
            target, nums, solution = task
            self.stats["groups"] += 1
            group = completion_ids[start : start + n]
            texts_ = [tokenizer.decode(c, skip_special_tokens=True) for c in group]
            right = [score(t, target, nums) == 1.0 for t in texts_]
            self.stats["greedy_right"] += int(self.greedy and right[0])
            if self.solutions and not any(right) and solution:
                completion_ids[start + n - 1] = self._demonstration(tokenizer, solution)
                self.stats["guided"] += 1
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}

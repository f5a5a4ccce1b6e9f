"""Online RL with GRPO (TRL GRPOTrainer): Countdown with rule rewards, UltraFeedback with a learned reward model.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/grpo/run.py --config recipes/grpo/countdown.yaml
    accelerate launch --config_file accelerate_configs/single_gpu.yaml recipes/grpo/run.py \
        --config recipes/grpo/countdown.yaml --model_name_or_path <SFT of Qwen/Qwen2.5-0.5B> \
        --use_vllm true --vllm_mode colocate

Each step samples `num_generations` completions for each of (generation batch / num_generations) prompts,
scores them with `reward_funcs` (weighted by `reward_weights`) and normalises the rewards within each prompt's
group. The configuration is checked before any model loads (`posttrain.rl_checks`); the reward curve is written to
`output_dir/reward_curve.{png,jsonl}`. Re-running the same command resumes from the newest checkpoint.
"""

from __future__ import annotations

from trl import GRPOTrainer, ModelConfig, TrlParser

from posttrain.cli import run_recipe
from posttrain.configs import CountdownArguments, ScriptArguments
from posttrain.rl import parse_rl_args, run_rl
from posttrain.rl_checks import GRPORecipeConfig
from rewards.config import RewardArguments


def main(
    script_args: ScriptArguments,
    countdown_args: CountdownArguments,
    reward_args: RewardArguments,
    training_args: GRPORecipeConfig,
    model_args: ModelConfig,
) -> GRPOTrainer:
    return run_rl("grpo", GRPOTrainer, script_args, countdown_args, reward_args, training_args, model_args)


def make_parser() -> TrlParser:
    return TrlParser((ScriptArguments, CountdownArguments, RewardArguments, GRPORecipeConfig, ModelConfig))


if __name__ == "__main__":
    run_recipe(main, make_parser(), parse_rl_args)

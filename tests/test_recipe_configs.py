"""Every YAML recipe parses strictly with its own script's parser, and docs reference files that exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RECIPE_YAMLS = sorted((REPO / "recipes").glob("*/*.yaml"))


def load_recipe_module(algo: str):
    path = REPO / "recipes" / algo / "run.py"
    spec = importlib.util.spec_from_file_location(f"recipe_{algo}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_recipes():
    assert any(p.parent.name == "sft" for p in RECIPE_YAMLS)


@pytest.mark.parametrize("yaml_path", RECIPE_YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_yaml_parses_strictly(yaml_path: Path):
    from posttrain.runtime import parse_recipe_args

    module = load_recipe_module(yaml_path.parent.name)
    parsed = parse_recipe_args(module.make_parser(), ["--config", str(yaml_path)])
    names = {type(obj).__name__ for obj in parsed}
    assert "ModelConfig" in names
    model_args = next(obj for obj in parsed if type(obj).__name__ == "ModelConfig")
    assert model_args.model_name_or_path


def test_unknown_yaml_key_is_an_error(tmp_path: Path):
    from posttrain.runtime import parse_recipe_args

    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "recipes/sft/countdown.yaml").read_text() + "\nmax_seq_length: 512\n")
    module = load_recipe_module("sft")
    with pytest.raises(ValueError, match="max_seq_length"):
        parse_recipe_args(module.make_parser(), ["--config", str(bad)])


def test_cli_overrides_yaml():
    from posttrain.runtime import parse_recipe_args

    module = load_recipe_module("sft")
    parsed = parse_recipe_args(
        module.make_parser(),
        [
            "--config",
            str(REPO / "recipes/sft/countdown.yaml"),
            "--learning_rate",
            "3e-5",
            "--countdown_num_numbers",
            "3",
            "4",
        ],
    )
    training = next(obj for obj in parsed if type(obj).__name__ == "SFTConfig")
    countdown = next(obj for obj in parsed if type(obj).__name__ == "CountdownArguments")
    assert training.learning_rate == pytest.approx(3e-5)
    assert countdown.countdown_num_numbers == [3, 4]
    from posttrain.runtime import bf16_default

    assert training.bf16 is bf16_default()  # per-device default: bf16 autocast only where the CPU/GPU has it


def test_bf16_default_follows_the_cpu(monkeypatch):
    import torch

    from posttrain import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert runtime.bf16_default() is False
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert runtime.bf16_default() is True


def test_bad_prompt_template_names_the_field():
    from posttrain.runtime import parse_recipe_args

    module = load_recipe_module("sft")
    with pytest.raises(ValueError, match="prompt_template"):
        parse_recipe_args(
            module.make_parser(),
            ["--config", str(REPO / "recipes/sft/countdown.yaml"), "--prompt_template", "nope"],
        )


def _documented_paths(text: str) -> set[str]:
    pattern = r"(?:recipes|accelerate_configs|benchmarks|eval|rewards|posttrain)/[\w./-]+\.(?:py|yaml)"
    return set(re.findall(pattern, text))


def test_readme_and_makefile_reference_existing_files():
    for doc in ("README.md", "Makefile"):
        text = (REPO / doc).read_text()
        paths = _documented_paths(text)
        assert paths, f"{doc} names no recipe files"
        missing = sorted(p for p in paths if not (REPO / p).exists())
        assert not missing, f"{doc} references missing files: {missing}"


def test_readme_make_targets_exist():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    text = (REPO / "README.md").read_text()
    # Commands live in fenced blocks and inline code; prose like "make the run stop" is not a target.
    code = re.findall(r"```.*?```", text, flags=re.S) + re.findall(r"`[^`\n]+`", text)
    used = {target for snippet in code for target in re.findall(r"\bmake ([a-z][\w-]+)", snippet)}
    assert "sft-countdown" in used  # the extraction finds the README's main command
    missing = sorted(used - targets)
    assert not missing, f"README uses make targets that the Makefile lacks: {missing}"

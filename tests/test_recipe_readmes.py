"""The GPU commands in recipes/<algo>/README.md stay runnable: every file they name exists and every recipe
command's arguments parse with that recipe's own parser (a renamed or removed flag fails here)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
READMES = sorted((REPO / "recipes").glob("*/README.md"))
RECIPE_RUN = re.compile(r"^recipes/(\w+)/run\.py$")


def _commands(readme: Path) -> list[list[str]]:
    """Indented code blocks, continuation lines joined, split into shell words."""
    commands, current = [], ""
    for line in readme.read_text().splitlines() + [""]:
        if line.startswith("    "):
            current += " " + line.strip().rstrip("\\")
            if not line.rstrip().endswith("\\"):
                commands.append(shlex.split(current))
                current = ""
        elif current:
            commands.append(shlex.split(current))
            current = ""
    return commands


def _parser(algo: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{algo}_readme", REPO / "recipes" / algo / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_parser()


def test_every_recipe_folder_has_a_readme():
    folders = {p.parent.name for p in (REPO / "recipes").glob("*/run.py")}
    assert folders <= {p.parent.name for p in READMES}  # recipes/refine has one too: a pipeline, no run.py


@pytest.mark.parametrize("readme", READMES, ids=lambda p: p.parent.name)
def test_readme_commands_parse(readme: Path):
    from posttrain.runtime import parse_recipe_args

    runs = 0
    for words in _commands(readme):
        for word in words:
            if re.fullmatch(r"(?:recipes|accelerate_configs)/[\w./-]+\.(?:py|yaml|md)", word):
                assert (REPO / word).is_file(), (
                    f"{readme.relative_to(REPO)} names {word}, which does not exist"
                )
        script = next((i for i, w in enumerate(words) if RECIPE_RUN.match(w)), None)
        if script is None:
            continue
        algo = RECIPE_RUN.match(words[script]).group(1)
        args = words[script + 1 :]
        parsed = parse_recipe_args(_parser(algo), args)  # the GPU-only defaults are set per device
        assert parsed, f"{' '.join(words)} did not parse"
        runs += 1
    assert runs >= 1, f"{readme.relative_to(REPO)} shows no recipe command"

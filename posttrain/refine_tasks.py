"""Re:Fine task descriptions: one Markdown file per task (`recipes/refine/tasks/*.md`), parsed strictly.

A task file is YAML front matter between `---` lines, then the task description in plain words (what the prompt
generator is told to make inputs for). The front matter names the task, how an input is put to the policy, the
judge's rubric, optional programmatic rules (extra weighted rewards: `length_window`, `patterns`) and where the
inputs come from (the generator by default, or a dataset such as TL;DR). Unknown or mistyped fields are errors
that name the field and the file, so a typo never silently drops a rule.

    python -m posttrain.refine_tasks grpo-config --task recipes/refine/tasks/style_transfer.md \
        --base recipes/grpo/refine.yaml --output runs/refine-style_transfer/grpo.yaml
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from posttrain.io import atomic_write_text

INPUT_SLOT = "{input}"
MAX_TASK_FILE_BYTES = 256 * 1024
TASK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class TaskFileError(ValueError):
    """A task file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GeneratorSettings(_Strict):
    """How the prompt generator asks for inputs (`posttrain.synthetic`)."""

    inputs_per_request: int = Field(default=8, ge=1, le=50)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, ge=16, le=32768)
    min_chars: int = Field(default=12, ge=1)
    max_chars: int = Field(default=1200, ge=1)
    # Topics rotated over the requests, so that a weak generator still spreads its inputs.
    hints: list[str] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _window(self) -> GeneratorSettings:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars={self.min_chars} must be <= max_chars={self.max_chars}")
        return self


class LengthWindowRule(_Strict):
    """Reward 1 for a reply whose word count lies in the window, falling linearly outside it (`rewards.rules`).

    ``min_ratio``/``max_ratio`` are relative to the input's word count: a summary at a tenth of its source is
    a collapse however the judge scores it."""

    weight: float = Field(default=0.5, gt=0.0, le=100.0)
    min_words: int | None = Field(default=None, ge=0)
    max_words: int | None = Field(default=None, ge=1)
    min_ratio: float | None = Field(default=None, ge=0.0)
    max_ratio: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="after")
    def _bounds(self) -> LengthWindowRule:
        if all(v is None for v in (self.min_words, self.max_words, self.min_ratio, self.max_ratio)):
            raise ValueError("set at least one of min_words, max_words, min_ratio, max_ratio")
        if self.min_words is not None and self.max_words is not None and self.min_words > self.max_words:
            raise ValueError(f"min_words={self.min_words} must be <= max_words={self.max_words}")
        if self.min_ratio is not None and self.max_ratio is not None and self.min_ratio > self.max_ratio:
            raise ValueError(f"min_ratio={self.min_ratio} must be <= max_ratio={self.max_ratio}")
        return self


class PatternRule(_Strict):
    """Regular expressions a reply must contain (``required``) or must not (``forbidden``)."""

    weight: float = Field(default=0.5, gt=0.0, le=100.0)
    required: list[str] = Field(default_factory=list, max_length=50)
    forbidden: list[str] = Field(default_factory=list, max_length=50)

    @field_validator("required", "forbidden")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not pattern:
                raise ValueError("an empty pattern matches everything")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression ({exc})") from None
        return patterns

    @model_validator(mode="after")
    def _some(self) -> PatternRule:
        if not self.required and not self.forbidden:
            raise ValueError("give at least one required or forbidden pattern")
        return self


class Rules(_Strict):
    length_window: LengthWindowRule | None = None
    patterns: PatternRule | None = None


class DatasetInputs(_Strict):
    """Inputs from a dataset instead of the generator (see `posttrain.tldr`)."""

    dataset: Literal["trl-lib/tldr", "tldr_fixture"]
    max_train: int = Field(default=256, ge=1)
    max_test: int = Field(default=64, ge=1)


class RefineTask(_Strict):
    name: str
    summary: str = Field(min_length=1, max_length=300)
    policy_prompt: str = Field(min_length=1, max_length=4000)
    rubric: str = Field(min_length=1, max_length=4000)
    generator: GeneratorSettings = Field(default_factory=GeneratorSettings)
    rules: Rules = Field(default_factory=Rules)
    inputs: DatasetInputs | None = None
    description: str = ""  # the Markdown body, filled in by load_task
    path: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not TASK_NAME_RE.match(name):
            raise ValueError("use lower-case letters, digits, - and _ (at most 64), e.g. style_transfer")
        return name

    @field_validator("policy_prompt")
    @classmethod
    def _slot(cls, template: str) -> str:
        if template.count(INPUT_SLOT) != 1:
            raise ValueError(f"must contain {INPUT_SLOT} exactly once (where the input goes)")
        return template

    def render_prompt(self, text: str) -> str:
        """The user message the policy sees for one input."""
        return self.policy_prompt.replace(INPUT_SLOT, text)


def _split_front_matter(text: str, path: Path) -> tuple[dict[str, Any], str]:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise TaskFileError(f"{path}: a task file starts with YAML front matter between two '---' lines")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise TaskFileError(f"{path}: the front matter is not closed by a '---' line") from None
    try:
        meta = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as exc:
        raise TaskFileError(f"{path}: the front matter is not valid YAML ({exc})") from None
    if not isinstance(meta, dict):
        raise TaskFileError(
            f"{path}: the front matter must be a mapping of fields, got {type(meta).__name__}"
        )
    return meta, "\n".join(lines[end + 1 :]).strip()


def _describe(error: ValidationError, path: Path) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(front matter)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (check its spelling; see recipes/refine/README.md for the fields)"
        problems.append(f"{where}: {message}")
    return f"{path}: " + "; ".join(problems)


def load_task(path: str | Path) -> RefineTask:
    """The task in ``path``; `TaskFileError` naming the field for anything missing, unknown or malformed."""
    path = Path(path)
    if not path.is_file():
        known = sorted(p.stem for p in Path("recipes/refine/tasks").glob("*.md"))
        hint = f" (tasks here: {', '.join(known)})" if known else ""
        raise TaskFileError(f"task file not found: {path}{hint}")
    if path.stat().st_size > MAX_TASK_FILE_BYTES:
        raise TaskFileError(f"{path}: larger than {MAX_TASK_FILE_BYTES} bytes; is this a task file?")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TaskFileError(f"{path}: not UTF-8 text") from None
    meta, body = _split_front_matter(text, path)
    for reserved in ("description", "path"):
        if reserved in meta:
            raise TaskFileError(
                f"{path}: {reserved}: set by the file itself (the Markdown body), not a field"
            )
    if not body and "inputs" not in meta:
        raise TaskFileError(f"{path}: the task description (the Markdown after the front matter) is empty")
    try:
        return RefineTask(**meta, description=body, path=str(path))
    except ValidationError as exc:
        raise TaskFileError(_describe(exc, path)) from None


def grpo_settings(task: RefineTask) -> dict[str, Any]:
    """The GRPO config fields a task sets: the judge rubric, its rule rewards and their weights."""
    funcs, weights = ["llm_judge"], [1.0]
    settings: dict[str, Any] = {"judge_rubric": task.rubric.strip()}
    window = task.rules.length_window
    if window is not None:
        funcs.append("length_window")
        weights.append(window.weight)
        for name in ("min_words", "max_words", "min_ratio", "max_ratio"):
            if getattr(window, name) is not None:
                settings[f"length_{name}"] = getattr(window, name)
    patterns = task.rules.patterns
    if patterns is not None:
        funcs.append("patterns")
        weights.append(patterns.weight)
        settings["patterns_required"] = list(patterns.required)
        settings["patterns_forbidden"] = list(patterns.forbidden)
    return {"reward_funcs": funcs, "reward_weights": weights, **settings}


def write_grpo_config(task: RefineTask, base: str | Path, output: str | Path) -> Path:
    """``base`` (a recipe YAML) with the task's settings laid over it, written to ``output``."""
    base_config = yaml.safe_load(Path(base).read_text(encoding="utf-8")) or {}
    merged = {**base_config, **grpo_settings(task)}
    header = f"# {task.name}: {base} with the settings of {task.path} (written by posttrain.refine_tasks)\n"
    return atomic_write_text(output, header + yaml.safe_dump(merged, sort_keys=False, allow_unicode=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="parse task files and print what each sets")
    check.add_argument("tasks", nargs="+")
    config = sub.add_parser("grpo-config", help="write the GRPO YAML for one task")
    config.add_argument("--task", required=True)
    config.add_argument("--base", default="recipes/grpo/refine.yaml")
    config.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            for path in args.tasks:
                task = load_task(path)
                print(f"{path}: {task.name} ({task.summary}) -> {grpo_settings(task)['reward_funcs']}")
        else:
            written = write_grpo_config(load_task(args.task), args.base, args.output)
            print(f"wrote {written}")
    except (TaskFileError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()

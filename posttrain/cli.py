"""The command-line entry of recipes and evaluations: what they refuse ends in one ``error:`` line, not a traceback.

A ValueError, RuntimeError or FileNotFoundError raised by this project's own code (posttrain, rewards, recipes,
eval) carries a message written for the user: it names the field and the fix. Raised from inside a library, or of
any other type, it is a fault and keeps its traceback. ``POSTTRAIN_TRACEBACK=1`` shows the traceback always.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = tuple(str(REPO / name) + os.sep for name in ("posttrain", "rewards", "recipes", "eval"))
USER_ERROR_TYPES = (ValueError, RuntimeError, FileNotFoundError)


def raised_by_project(tb: TracebackType | None) -> bool:
    """Whether the innermost frame of ``tb`` (where the exception was raised) is in this project's packages."""
    frames = traceback.extract_tb(tb)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(PROJECT_PACKAGES)


def is_user_error(exc: BaseException) -> bool:
    """A refusal with a message for the user (see the module docstring), as opposed to a fault."""
    return isinstance(exc, USER_ERROR_TYPES) and raised_by_project(exc.__traceback__)


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if text.startswith("error:") else f"error: {text}"


def run_recipe(
    main: Callable[..., Any],
    parser: Any,
    parse: Callable[..., Sequence[Any]],
    argv: Sequence[str] | None = None,
) -> Any:
    """``main(*parse(parser, argv))`` for ``if __name__ == "__main__"``, with refusals as one ``error:`` line.

    Everything raised while parsing is about the configuration (an unknown field, a value a config class's checks
    refuse), whichever library raised it; `parse_recipe_args` itself refuses a YAML file that does not parse."""
    try:
        args = parse(parser, None if argv is None else list(argv))
    except (ValueError, TypeError) as exc:
        if _show_traceback():
            raise
        raise SystemExit(_parse_error(exc)) from None
    return run_cli(main, *args)


def run_cli(main: Callable[..., Any], *args: Any) -> Any:
    """``main(*args)``, a refusal raised by the project's code (`is_user_error`) ending in one ``error:`` line
    and exit status 1; for the ``__main__`` of the project's command-line modules."""
    try:
        return main(*args)
    except USER_ERROR_TYPES as exc:
        if _show_traceback() or not is_user_error(exc):
            raise
        print(_message(exc), file=sys.stderr)
        print("(set POSTTRAIN_TRACEBACK=1 to see where it was raised)", file=sys.stderr)
        raise SystemExit(1) from None


def _show_traceback() -> bool:
    return os.environ.get("POSTTRAIN_TRACEBACK", "").lower() in ("1", "true", "yes")


# What transformers' and TRL's parsers say of a field no config class has: (pattern, where it was given)
UNKNOWN_FIELDS = (
    (re.compile(r"not used by the HfArgumentParser: (\[.*\])"), "on the command line"),
    (re.compile(r"Unknown arguments from config file: (\[.*?\])"), "in the --config file"),
)


def _parse_error(exc: BaseException) -> str:
    for pattern, where in UNKNOWN_FIELDS:
        found = pattern.search(str(exc))
        if found:
            return (
                f"error: unknown field(s) {where}: {found.group(1)}. A misspelt name? `--help` lists every field "
                f"of the recipe."
            )
    return _message(exc)

"""The command line of recipes and evaluations (`posttrain.cli`): a refused configuration or input is one `error:`
line naming what to change; a fault from inside a library keeps its traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from posttrain.cli import is_user_error, run_cli, run_recipe
from posttrain.runtime import parse_recipe_args
from tests.test_recipe_configs import load_recipe_module

REPO = Path(__file__).resolve().parent.parent
SFT_YAML = str(REPO / "recipes/sft/countdown.yaml")


def _refusal(argv: list[str], capsys, main=None) -> str:
    module = load_recipe_module("sft")
    with pytest.raises(SystemExit) as info:
        run_recipe(
            main or (lambda *args: pytest.fail("main ran")), module.make_parser(), parse_recipe_args, argv
        )
    assert info.value.code != 0
    err = capsys.readouterr().err
    return str(info.value.code) if isinstance(info.value.code, str) else err


@pytest.mark.parametrize(
    "config_text, argv, expected",
    [
        (
            None,
            ["--learning_rte", "1e-5"],
            "unknown field(s) on the command line: ['--learning_rte', '1e-5']",
        ),
        (
            "{recipe}max_seq_length: 512\n",
            [],
            "unknown field(s) in the --config file: ['--max_seq_length', '512']",
        ),
        ("a: [1, 2\n", [], "is not valid YAML"),
        ("- 1\n- 2\n", [], "must be a YAML mapping of field: value"),
        ("42\n", [], "must be a YAML mapping of field: value"),
        (None, ["--countdown_num_numbers", "9"], "countdown_num_numbers=[9] must list sizes between 2 and 6"),
        (None, ["--learning_rate", "fast"], "argument --learning_rate"),  # argparse's own one-line error
    ],
)
def test_a_refused_configuration_is_one_error_line(tmp_path, capsys, config_text, argv, expected):
    config = SFT_YAML
    if config_text is not None:
        config = str(tmp_path / "recipe.yaml")
        Path(config).write_text(config_text.format(recipe=Path(SFT_YAML).read_text() + "\n"))
    message = _refusal(["--config", config, *argv], capsys)
    assert expected in message and "Traceback" not in message


def test_refusals_raised_by_the_project_print_one_line_and_faults_keep_their_traceback(capsys):
    from posttrain.rl_checks import RLConfigError, fail

    def refused(*args):
        fail(["num_generations=0: every prompt needs at least 2 (fix: --num_generations 4)."], "RLOO")

    message = _refusal(["--config", SFT_YAML], capsys, main=refused)
    assert message.startswith("error: RLOO configuration problem(s)") and "--num_generations 4" in message
    assert "POSTTRAIN_TRACEBACK=1" in message

    def fault(*args):
        import json

        json.loads("{")  # a ValueError raised inside the standard library: not a refusal, a fault

    module = load_recipe_module("sft")
    with pytest.raises(ValueError, match="Expecting property name"):
        run_recipe(fault, module.make_parser(), parse_recipe_args, ["--config", SFT_YAML])
    with pytest.raises(KeyError):  # other types are never a refusal
        run_recipe(lambda *a: {}["x"], module.make_parser(), parse_recipe_args, ["--config", SFT_YAML])
    refusal = _raised(lambda: fail(["x"]))
    assert isinstance(refusal, RLConfigError) and is_user_error(refusal)
    assert not is_user_error(_raised(lambda: __import__("json").loads("{")))


def test_posttrain_traceback_shows_the_traceback(monkeypatch):
    from posttrain.rl_checks import RLConfigError, fail

    monkeypatch.setenv("POSTTRAIN_TRACEBACK", "1")
    module = load_recipe_module("sft")
    with pytest.raises(RLConfigError):
        run_recipe(lambda *a: fail(["x"]), module.make_parser(), parse_recipe_args, ["--config", SFT_YAML])


def _raised(action) -> BaseException:
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - the test inspects whatever was raised
        return exc
    raise AssertionError("nothing was raised")


def test_the_rl_recipes_refuse_through_the_command_line():
    """The wiring of `if __name__ == "__main__"`: a real process, a check of posttrain.rl_checks, no traceback."""
    proc = subprocess.run(
        [
            sys.executable,
            "recipes/rloo/run.py",
            "--config",
            "recipes/rloo/countdown.yaml",
            "--num_generations",
            "0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1"),
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: RLOO configuration problem(s)" in proc.stderr and "--num_generations 4" in proc.stderr


def test_an_evaluation_of_a_missing_model_folder_says_so(tmp_path, capsys):
    from eval import countdown

    missing = tmp_path / "runs" / "nowhere"
    argv = ["--model", str(missing), "--n_tasks", "2", "--output_dir", str(tmp_path / "out"), "--no_progress"]
    with pytest.raises(SystemExit) as info:
        run_cli(countdown.main, argv)
    err = capsys.readouterr().err
    assert info.value.code == 1 and err.startswith(f"error: model folder {missing} does not exist")
    assert "Repo id" not in err  # not the hub's complaint about a repo id


def test_a_paired_comparison_of_unreadable_folders_names_the_file(tmp_path, capsys):
    from eval import paired

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.jsonl").write_text("{}\n")
    (tmp_path / "run" / "summary.json").write_text('{"judge":')
    with pytest.raises(SystemExit):
        run_cli(paired.main, [str(tmp_path / "run"), str(tmp_path / "run")])
    assert (
        f"error: {tmp_path / 'run'}/summary.json: not a readable win-rate summary" in capsys.readouterr().err
    )

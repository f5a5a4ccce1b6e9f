"""Which data a recipe trains on, picked by `dataset_name`: one table of names, one lookup, one error.

Every recipe asks `dataset_kind(name, recipe)` and loads by the kind it gets back; a name the recipe cannot
train on stops the run with `DatasetNameError`, listing the names that recipe takes. The offline `fixture`
stands in for whichever hub data the recipe trains on (smol-smoltalk for SFT, UltraFeedback otherwise).
"""

from __future__ import annotations

import os
from pathlib import Path

from posttrain.chat_data import FIXTURE_NAME, SMOLTALK_HUB_ID, ULTRAFEEDBACK_HUB_ID
from posttrain.codesum import CODESUM_HUB_ID
from posttrain.codesum import GENERATED as CODESUM_GENERATED
from posttrain.countdown import COUNTDOWN_HUB_ID, WARMSTART_HUB
from posttrain.gsm8k import GENERATED as GSM8K_GENERATED
from posttrain.gsm8k import GSM8K_HUB_ID

COUNTDOWN = "countdown"  # tasks generated offline
COUNTDOWN_HUB = "countdown_hub"  # Countdown tasks from the hub (solutions written by the solver)
WARMSTART_HUB_TRACES = "warmstart_hub"  # reasoning traces from the hub
SMOLTALK = "smoltalk"  # chat SFT
ULTRAFEEDBACK = "ultrafeedback"  # prompts (RL) or preference pairs (DPO, reward)
PAIRS = "pairs"  # a preference folder written by `python -m posttrain.preferences`
GSM8K = "gsm8k"  # grade-school word problems generated offline (posttrain.gsm8k)
GSM8K_HUB = "gsm8k_hub"  # openai/gsm8k
CODESUM = "codesum"  # Python functions and docstrings from the installed standard library (posttrain.codesum)
CODESUM_HUB = "codesum_hub"  # CodeXGLUE code-to-text, Python
REFINE = "refine"  # a Re:Fine prompt folder written by `python -m posttrain.synthetic`
GENRM = "genrm"  # GenRM-CoT verification data: a folder written by `python -m posttrain.genrm`, or the hub's

GENRM_HUB_ID = "psr-ai/genrm-cot"
# Commit not known offline: "main" is a moving target (the dataset card showed its last upload as the short sha
# 58c7cb8, which could not be resolved to a full commit without hub access). Pin the full commit sha here
# before publishing results.
GENRM_HUB_REVISION = "main"
# The file that marks a folder written by `python -m posttrain.genrm` (it records the request and counts).
GENRM_DATA_FILE = "genrm_data.json"
# The card that marks a prompt folder written by `python -m posttrain.synthetic`.
SYNTHETIC_CARD_FILE = "synthetic_prompts.json"

# kind -> (the names that select it, how an error message describes it)
KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    COUNTDOWN: (("countdown",), "'countdown' (Countdown tasks generated offline)"),
    COUNTDOWN_HUB: ((COUNTDOWN_HUB_ID,), f"{COUNTDOWN_HUB_ID!r} (Countdown tasks, needs the hub)"),
    WARMSTART_HUB_TRACES: (
        (WARMSTART_HUB,),
        f"{WARMSTART_HUB!r} (Countdown warm-start traces, needs the hub)",
    ),
    SMOLTALK: (
        (SMOLTALK_HUB_ID, FIXTURE_NAME),
        f"{SMOLTALK_HUB_ID!r} / {FIXTURE_NAME!r} (chat SFT; the fixture is offline)",
    ),
    ULTRAFEEDBACK: (
        (ULTRAFEEDBACK_HUB_ID, FIXTURE_NAME),
        f"{ULTRAFEEDBACK_HUB_ID!r} / {FIXTURE_NAME!r} (UltraFeedback; the fixture is offline)",
    ),
    PAIRS: (
        (),
        "a preference folder (datasets.save_to_disk layout), e.g. built by "
        "`python -m posttrain.preferences --model ... --output_dir <folder>`",
    ),
    GSM8K: ((GSM8K_GENERATED,), f"{GSM8K_GENERATED!r} (grade-school word problems generated offline)"),
    GSM8K_HUB: ((GSM8K_HUB_ID,), f"{GSM8K_HUB_ID!r} (grade-school maths, needs the hub)"),
    CODESUM: (
        (CODESUM_GENERATED,),
        f"{CODESUM_GENERATED!r} (functions and docstrings of the standard library)",
    ),
    CODESUM_HUB: ((CODESUM_HUB_ID,), f"{CODESUM_HUB_ID!r} (CodeXGLUE code-to-text, needs the hub)"),
    REFINE: (
        (),
        "a Re:Fine prompt folder written by `python -m posttrain.synthetic --task ... --output_dir <folder>`",
    ),
    GENRM: (
        (GENRM_HUB_ID,),
        f"a GenRM verification folder written by `python -m posttrain.genrm --model ... --output_dir <folder>`, "
        f"or {GENRM_HUB_ID!r} (GenRM-CoT data, needs the hub)",
    ),
}
# The kinds each recipe trains on; the first one is used when dataset_name is unset.
RECIPE_KINDS: dict[str, tuple[str, ...]] = {
    "SFT": (
        COUNTDOWN,
        WARMSTART_HUB_TRACES,
        COUNTDOWN_HUB,
        SMOLTALK,
        GENRM,
        GSM8K,
        GSM8K_HUB,
        CODESUM,
        CODESUM_HUB,
    ),
    "RL": (COUNTDOWN, COUNTDOWN_HUB, ULTRAFEEDBACK, REFINE, GSM8K, GSM8K_HUB, CODESUM, CODESUM_HUB),
    "preference": (ULTRAFEEDBACK, PAIRS),
}


class DatasetNameError(ValueError):
    """`dataset_name` names data the recipe cannot train on; the message lists the names it takes."""


def is_pairs_folder(path: str | os.PathLike | None) -> bool:
    """True when `path` is a folder written by `datasets.save_to_disk` (our pairs folders are)."""
    if not path:
        return False
    p = Path(path)
    return p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file())


def is_genrm_folder(path: str | os.PathLike | None) -> bool:
    """True when `path` is a folder written by `python -m posttrain.genrm` (it holds GENRM_DATA_FILE)."""
    return bool(path) and (Path(path) / GENRM_DATA_FILE).is_file()


def dataset_kind(name: str | None, recipe: str) -> str:
    """The kind of data `name` selects for `recipe` ("SFT", "RL" or "preference"); unset: the recipe's default."""
    kinds = RECIPE_KINDS[recipe]
    if PAIRS in kinds and is_pairs_folder(name):
        return PAIRS
    if GENRM in kinds and is_genrm_folder(name):
        return GENRM
    if REFINE in kinds and name and (Path(name) / SYNTHETIC_CARD_FILE).is_file():
        return REFINE
    if not name:
        return kinds[0]
    for kind in kinds:
        if name in KINDS[kind][0]:
            return kind
    choices = "; ".join(KINDS[kind][1] for kind in kinds)
    raise DatasetNameError(
        f"dataset_name={name!r} is not supported by the {recipe} recipes; use one of: {choices} (unset: the first)."
    )

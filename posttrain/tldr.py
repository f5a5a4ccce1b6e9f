"""TL;DR summarisation inputs: `trl-lib/tldr` at a pinned revision, or an offline fixture in its schema.

The hub dataset has `prompt` ("SUBREDDIT: r/...\\n\\nTITLE: ...\\n\\nPOST: ...\\n\\nTL;DR:") and `completion` (the
reference summary) columns. The fixture builds posts of the same shape from templates (advice requests,
purchases, trips, work trouble), so the summarisation recipe runs with no hub access; its posts are long enough
(60-140 words) that a two-word "summary" is visibly a collapse.
"""

from __future__ import annotations

import random
from typing import Any

TLDR_HUB_ID = "trl-lib/tldr"
# The dataset's newest commit as of its last upload (README, Jan 2025); data files from the upload before it.
TLDR_HUB_REVISION = "21233da376667088e6eb1ce4ce19ed832c2935d3"
TLDR_FIXTURE = "tldr_fixture"
PROMPT_SUFFIX = "TL;DR:"

_PEOPLE = [
    "my roommate",
    "my sister",
    "my boyfriend",
    "my best friend",
    "my manager",
    "my neighbour",
    "my dad",
]
_AGES = ["19", "22", "24", "27", "31", "35", "42"]
_PLACES = ["Lisbon", "Denver", "a small town in Ohio", "Osaka", "Glasgow", "Toronto", "the coast"]
_THINGS = ["a used car", "a laptop", "an old bike", "a couch", "a camera", "a rescue dog", "a sewing machine"]
_DURATIONS = ["two weeks", "three months", "half a year", "a year", "four years"]
_JOBS = ["a warehouse", "a bakery", "a software startup", "a hospital", "a call centre", "a bookshop"]

_FAMILIES: list[dict[str, Any]] = [
    {
        "subreddit": "relationship_advice",
        "title": "{person} keeps borrowing money and I don't know how to bring it up",
        "post": (
            "I ({age}) have known {person} for {duration}. Over the last few months they have borrowed money from "
            "me five or six times, always small amounts, always with a story about rent or a late paycheck. At "
            "first I did not mind, but it now adds up to more than I spend on groceries in a month. They never "
            "mention paying it back, and when I hinted at it last week they changed the subject and then seemed "
            "annoyed with me for the rest of the evening. I do not want to lose the friendship, but I am starting "
            "to feel used and I have my own bills. How do I ask for the money back without it turning into a fight?"
        ),
        "summary": "{person} borrows money often and never repays it; how do I ask for it back without a fight?",
    },
    {
        "subreddit": "personalfinance",
        "title": "Should I buy {thing} now or keep saving?",
        "post": (
            "I am {age} and work at {job}. I have been saving for {duration} and now have enough to buy {thing} "
            "outright, which would make my commute and weekends a lot easier. The problem is that it would use up "
            "almost all of my emergency fund. My job feels stable, but my landlord mentioned the rent might go up "
            "next year. A friend says I should finance it instead and keep the cash, but the interest rate I was "
            "offered is high. Is it smarter to wait a few more months, to pay cash now, or to take the loan?"
        ),
        "summary": "I can pay cash for {thing} but it would drain my emergency fund; wait, pay now, or take a loan?",
    },
    {
        "subreddit": "travel",
        "title": "First trip alone to {place}, nervous about getting around",
        "post": (
            "Next month I am going to {place} for {duration} on my own for the first time. I am {age} and have "
            "only travelled with family before. I booked a room close to the centre, but I do not speak the "
            "language well and I am worried about getting lost, using public transport and eating alone in "
            "restaurants. I also have a small budget, so taxis everywhere are not an option. My plan so far is to "
            "download offline maps and learn a few phrases. What else should I do to feel more confident, and are "
            "there mistakes first-time solo travellers usually make?"
        ),
        "summary": "Travelling alone to {place} for the first time on a small budget; how do I feel confident getting around?",
    },
    {
        "subreddit": "antiwork",
        "title": "Manager at {job} changed my shifts without asking again",
        "post": (
            "I ({age}) have worked at {job} for {duration}. For the third time this month my manager moved my "
            "shifts without asking me, and I only found out from the group chat the night before. I take classes "
            "two evenings a week and I told them that when I was hired. This time the change means I miss an exam "
            "review session. When I raised it, I was told the schedule is the schedule and that others manage. I "
            "like my coworkers and need the income, but this keeps happening. Should I go to HR, talk to my "
            "manager again in writing, or start looking for another job?"
        ),
        "summary": "My manager at {job} keeps changing my shifts without notice despite my classes; HR, email, or quit?",
    },
]


def fixture_rows(n: int = 240, seed: int = 0) -> list[dict[str, str]]:
    """``n`` distinct TL;DR rows (`prompt`, `completion`) in the hub's schema, built from templates."""
    rng = random.Random(seed)
    rows, seen = [], set()
    attempts = 0
    while len(rows) < n and attempts < n * 50:
        attempts += 1
        family = _FAMILIES[attempts % len(_FAMILIES)]
        slots = {
            "person": rng.choice(_PEOPLE),
            "age": rng.choice(_AGES),
            "place": rng.choice(_PLACES),
            "thing": rng.choice(_THINGS),
            "duration": rng.choice(_DURATIONS),
            "job": rng.choice(_JOBS),
        }
        post = family["post"].format(**slots)
        title = family["title"].format(**slots)
        key = (title, post)
        if key in seen:
            continue
        seen.add(key)
        title = title[0].upper() + title[1:]
        prompt = f"SUBREDDIT: r/{family['subreddit']}\n\nTITLE: {title}\n\nPOST: {post}\n\n{PROMPT_SUFFIX}"
        summary = family["summary"].format(**slots)
        rows.append({"prompt": prompt, "completion": " " + summary[0].upper() + summary[1:]})
    return rows


def post_text(prompt: str) -> str:
    """The post of a TL;DR prompt, without the trailing "TL;DR:" cue (the task's own prompt asks instead)."""
    text = prompt.strip()
    return text[: -len(PROMPT_SUFFIX)].rstrip() if text.endswith(PROMPT_SUFFIX) else text


def load_tldr_inputs(
    dataset: str, *, max_train: int, max_test: int, seed: int = 0
) -> tuple[list[str], list[str], str]:
    """(train posts, test posts, source). The hub's own train and test splits; the fixture split by seed."""
    if dataset == TLDR_FIXTURE:
        rows = fixture_rows(max_train + max_test, seed=seed)
        posts = [post_text(r["prompt"]) for r in rows]
        return posts[:max_train], posts[max_train:], TLDR_FIXTURE
    if dataset != TLDR_HUB_ID:
        raise ValueError(f"unknown TL;DR dataset {dataset!r}; use {TLDR_HUB_ID!r} or {TLDR_FIXTURE!r}")
    from datasets import load_dataset

    try:
        train = load_dataset(TLDR_HUB_ID, split=f"train[:{max_train}]", revision=TLDR_HUB_REVISION)
        test = load_dataset(TLDR_HUB_ID, split=f"test[:{max_test}]", revision=TLDR_HUB_REVISION)
    except Exception as exc:  # noqa: BLE001 - offline, or the hub refused: say what to use instead
        raise FileNotFoundError(
            f"cannot load {TLDR_HUB_ID}@{TLDR_HUB_REVISION[:7]} ({type(exc).__name__}: {str(exc)[:200]}); offline, "
            f"use the fixture: `make refine TASK=tldr_fixture`"
        ) from None
    return (
        [post_text(p) for p in train["prompt"]],
        [post_text(p) for p in test["prompt"]],
        f"{TLDR_HUB_ID}@{TLDR_HUB_REVISION}",
    )

"""The leaderboard page in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``, which
`.ci/run` installs) loads it, reads the ranking from the rendered table, follows a team link and saves a screenshot.
Skipped, with the reason, where Chromium is not installed."""

from __future__ import annotations

import json
import shutil

import pytest

from leaderboard import admin, db
from leaderboard.app import Board, LeaderboardServer, open_database
from leaderboard.scoring import ScoringWorker
from leaderboard.sets import load_sets
from tests.test_leaderboard import CD_ROWS, _write_jsonl, count_rows, countdown_submission, post, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless Chromium not installed (apt-get install chromium chromium-driver; .ci/run does it in CI)",
)


@pytest.fixture()
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_shows_the_ranking_escapes_names_and_links_histories(tmp_path, browser):
    from selenium.webdriver.common.by import By

    sets = load_sets(_write_jsonl(tmp_path / "cd.jsonl", CD_ROWS), None)
    make_session = open_database(f"sqlite:///{tmp_path / 'b.db'}")
    # Public tasks t0..t2 (only t0 is solvable): "solver" gets it right, "<b>bold</b>" answers wrongly.
    teams = {
        "solver": ("grpo", {"t0": "<answer>4*6*1</answer>"}),
        "<b>bold</b>": ("<i>dpo</i>", {"t0": "<answer>4+6+1</answer>"}),
        "late": ("sft", {"t1": "no answer"}),
    }
    worker = ScoringWorker(make_session, sets, None, poll_s=0.05)
    with LeaderboardServer(Board(make_session, sets, worker), port=0) as server:
        ids = []
        for name, (method, answers) in teams.items():
            token = admin.team_add(make_session, name)
            code, answer, _ = post(
                server.url, json.dumps(countdown_submission(answers, method)).encode(), token
            )
            assert code == 202
            ids.append(answer["id"])
        wait_until(lambda: count_rows(make_session, db.Submission.status == db.SCORED) == len(ids))
        browser.get(server.url + "/")
        rows = browser.find_elements(By.CSS_SELECTOR, "#ranking tbody tr.team-row")
        ranked = [(r.find_element(By.CSS_SELECTOR, ".team").text, r.find_element(By.CSS_SELECTOR, ".countdown").text)
                  for r in rows]  # fmt: skip
        assert ranked[0] == ("solver", "0.333")
        assert {name for name, _ in ranked[1:]} == {"<b>bold</b>", "late"}  # shown as text, not markup
        assert not browser.find_elements(By.CSS_SELECTOR, "#ranking b, #ranking i")
        assert "open" in browser.find_element(By.ID, "board-state").text
        plot = browser.find_element(By.CSS_SELECTOR, "img[src='/plot.png']")
        assert browser.execute_script("return arguments[0].naturalWidth", plot) > 100  # the plot loaded
        browser.save_screenshot(str(tmp_path / "leaderboard.png"))
        assert (tmp_path / "leaderboard.png").stat().st_size > 10_000
        rows[0].find_element(By.CSS_SELECTOR, ".team a").click()
        assert browser.find_element(By.ID, "team-name").text == "solver"
        assert "scored" in browser.find_element(By.ID, "history").text

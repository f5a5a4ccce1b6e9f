"""A self-hostable leaderboard: hidden test sets, server-side scoring, a ranked web page.

    make serve-leaderboard                                   # builds the hidden sets once, then serves
    python -m leaderboard.admin team-add "my team"           # prints the team's token once
    make leaderboard-submit MODEL=... METHOD=sft LEADERBOARD_URL=http://127.0.0.1:8100 LEADERBOARD_TOKEN=...

Modules: `db` (tables, versioned schema, SQLite/any SQLAlchemy URL), `sets` (hidden test sets and their public
prompt files), `scoring` (the durable scoring queue), `app` (the FastAPI server and its pages), `admin` (the CLI).
"""

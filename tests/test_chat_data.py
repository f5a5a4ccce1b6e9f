"""Offline fixtures in the hub schemas, their validation errors, and the hub/fixture source choice."""

from __future__ import annotations

import copy
import re

import pytest

from posttrain import chat_data
from posttrain.chat_data import (
    FIXTURE_NAME,
    DatasetSchemaError,
    load_smoltalk,
    load_ultrafeedback,
    ultrafeedback_prompts,
    validate_smoltalk_rows,
    validate_ultrafeedback_rows,
)
from posttrain.chat_fixture import (
    SMOLTALK_SPLITS,
    ULTRAFEEDBACK_SPLITS,
    smoltalk_fixture_rows,
    ultrafeedback_fixture_rows,
)

UF_COLUMNS = {"prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected"}


def test_smoltalk_fixture_schema_and_multi_turn():
    ds = load_smoltalk(FIXTURE_NAME, "train")
    assert set(ds.column_names) == {"messages", "source"}
    assert len(ds) == SMOLTALK_SPLITS["train"]
    n_assistant = [sum(m["role"] == "assistant" for m in row["messages"]) for row in ds]
    assert max(n_assistant) >= 2, "the fixture must contain multi-turn conversations"
    assert any(row["messages"][0]["role"] == "system" for row in ds)


@pytest.mark.parametrize("split", sorted(ULTRAFEEDBACK_SPLITS))
def test_ultrafeedback_fixture_schema(split):
    ds = load_ultrafeedback(FIXTURE_NAME, split, max_rows=50)
    assert set(ds.column_names) == UF_COLUMNS
    assert len(ds) == 50
    row = ds[0]
    assert row["chosen"][0] == {"role": "user", "content": row["prompt"]}
    assert row["chosen"][-1]["role"] == "assistant" and row["rejected"][-1]["role"] == "assistant"
    assert row["messages"] == row["chosen"]
    assert all(c > r for c, r in zip(ds["score_chosen"], ds["score_rejected"], strict=True))


def test_fixture_is_deterministic_and_train_test_disjoint():
    assert ultrafeedback_fixture_rows("train_prefs") == ultrafeedback_fixture_rows("train_prefs")
    train = {r["prompt"] for r in ultrafeedback_fixture_rows("train_prefs")}
    test = {r["prompt"] for r in ultrafeedback_fixture_rows("test_prefs")}
    assert not train & test
    chat_train = {
        m["content"] for r in smoltalk_fixture_rows("train") for m in r["messages"] if m["role"] == "user"
    }
    chat_test = {
        m["content"] for r in smoltalk_fixture_rows("test") for m in r["messages"] if m["role"] == "user"
    }
    assert not chat_train & chat_test


def test_fixture_answers_are_right():
    """The last number a chosen arithmetic reply states is the value (whatever its style); the rejected differs."""
    checked = 0
    for row in ultrafeedback_fixture_rows("test_prefs"):
        prompt, chosen = row["prompt"], row["chosen"][-1]["content"]
        if prompt.startswith("What is ") and prompt[8].isdigit():
            a, op, b = prompt[len("What is ") : -1].split()
            value = {"+": int(a) + int(b), "-": int(a) - int(b), "×": int(a) * int(b)}[op]
            assert re.findall(r"-?\d+", chosen)[-1] == str(value), chosen
            assert row["rejected"][-1]["content"] != chosen
            checked += 1
    assert checked >= 5, f"only {checked} arithmetic rows were checked"


def test_prompts_are_unique_and_limited():
    prompts = ultrafeedback_prompts(FIXTURE_NAME, "test_prefs", n=20)
    assert len(prompts) == 20 == len(set(prompts))
    with pytest.raises(ValueError, match="n must be"):
        ultrafeedback_prompts(FIXTURE_NAME, n=0)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r["chosen"].pop(), "chosen"),
        (lambda r: r["rejected"][1].update(role="robot"), "rejected[1].role"),
        (lambda r: r["chosen"][1].update(content=None), "chosen[1].content"),
        (lambda r: r.update(prompt=""), "prompt"),
        (lambda r: r.pop("rejected"), "rejected"),
        (lambda r: r.update(score_chosen="high"), "score_chosen"),
    ],
)
def test_ultrafeedback_errors_name_row_and_field(mutate, field):
    rows = copy.deepcopy(ultrafeedback_fixture_rows("test_prefs")[:5])
    mutate(rows[3])
    with pytest.raises(DatasetSchemaError) as err:
        validate_ultrafeedback_rows(rows, split="test_prefs")
    message = str(err.value)
    assert "ultrafeedback_binarized" in message and "row 3" in message and f"'{field}'" in message


def test_smoltalk_errors_name_row_and_field():
    rows = copy.deepcopy(smoltalk_fixture_rows("test")[:4])
    rows[2]["messages"].insert(1, {"role": "system", "content": "late system prompt"})
    with pytest.raises(DatasetSchemaError, match=r"row 2: field 'messages\[1\]\.role'"):
        validate_smoltalk_rows(rows, split="test")
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]}]
    with pytest.raises(DatasetSchemaError, match="turns alternate"):
        validate_smoltalk_rows(rows, split="train")


def test_unknown_split_and_dataset_name():
    with pytest.raises(ValueError, match="no split 'validation'"):
        load_smoltalk(FIXTURE_NAME, "validation")
    with pytest.raises(ValueError, match="dataset_name='someone/else'"):
        load_ultrafeedback("someone/else")


def test_hub_name_falls_back_to_fixture_when_offline(monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not chat_data.hub_reachable()
    with caplog.at_level("WARNING", logger="posttrain"):
        ds = load_ultrafeedback(None, "test_prefs", max_rows=3)
    assert len(ds) == 3 and "offline fixture" in caplog.text


def test_hub_is_used_when_reachable(monkeypatch):
    calls = []
    monkeypatch.setattr(chat_data, "hub_reachable", lambda timeout_s=3.0: True)
    monkeypatch.setattr(
        chat_data,
        "_load_hub",
        lambda hub_id, split, revision, max_rows: calls.append((hub_id, revision)) or [],
    )
    load_ultrafeedback(chat_data.ULTRAFEEDBACK_HUB_ID, "test_prefs")
    assert calls == [(chat_data.ULTRAFEEDBACK_HUB_ID, chat_data.ULTRAFEEDBACK_REVISION)]


def test_full_run_refuses_the_fixture_fallback(monkeypatch, caplog):
    monkeypatch.setattr(chat_data, "hub_reachable", lambda timeout_s=3.0: False)
    hub = chat_data.ULTRAFEEDBACK_HUB_ID
    with pytest.raises(chat_data.HubUnreachableError, match="--dataset_name fixture"):
        chat_data.resolve_source(hub, hub, allow_fallback=False)
    with pytest.raises(chat_data.HubUnreachableError, match="no row limit"):
        load_ultrafeedback(None, "test_prefs")  # every row asked for
    # A small run (a row limit) keeps the logged fallback.
    with caplog.at_level("WARNING", logger="posttrain"):
        assert chat_data.resolve_source(hub, hub, allow_fallback=True) == FIXTURE_NAME
    assert "offline fixture" in caplog.text
    assert chat_data.resolve_source(FIXTURE_NAME, hub, allow_fallback=False) == FIXTURE_NAME


def test_an_explicit_hub_name_is_not_probed_again(monkeypatch):
    """Loaders take the source resolved once per run: the hub id loads from the hub, whatever a probe says."""
    calls = []
    monkeypatch.setattr(chat_data, "hub_reachable", lambda timeout_s=3.0: calls.append("probe") or False)
    monkeypatch.setattr(
        chat_data,
        "_load_hub",
        lambda hub_id, split, revision, max_rows: calls.append((hub_id, split)) or [],
    )
    load_smoltalk(chat_data.SMOLTALK_HUB_ID, "train", max_rows=4)
    load_smoltalk(chat_data.SMOLTALK_HUB_ID, "test", max_rows=4)
    assert calls == [(chat_data.SMOLTALK_HUB_ID, "train"), (chat_data.SMOLTALK_HUB_ID, "test")]


def test_hub_probe_skips_the_network_in_offline_mode(monkeypatch):
    import huggingface_hub.utils

    def no_session():
        raise AssertionError("offline mode must not probe")

    monkeypatch.setattr(huggingface_hub.utils, "get_session", no_session)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert chat_data.hub_reachable() is False


def test_hub_probe_goes_through_the_proxy(monkeypatch):
    """HTTP(S)_PROXY is honoured: the endpoint cannot be resolved, only the proxy answers."""
    import http.server
    import threading

    import huggingface_hub.utils
    from huggingface_hub import constants

    seen = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 - http.server's naming
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for var in (
            "HF_HUB_OFFLINE",
            "HF_DATASETS_OFFLINE",
            "NO_PROXY",
            "no_proxy",
            "ALL_PROXY",
            "all_proxy",
        ):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", "http://hub.invalid")
        huggingface_hub.utils.close_session()  # the shared session reads proxy settings when it is created
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{server.server_address[1]}")
        assert chat_data.hub_reachable(timeout_s=5.0) is True
        assert seen and seen[0].startswith("http://hub.invalid/")
        huggingface_hub.utils.close_session()
        monkeypatch.delenv("HTTP_PROXY")
        monkeypatch.delenv("http_proxy")
        assert chat_data.hub_reachable(timeout_s=5.0) is False  # no proxy: hub.invalid does not resolve
    finally:
        huggingface_hub.utils.close_session()
        server.shutdown()
        server.server_close()

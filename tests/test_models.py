"""Model resolution: the embedded default is materialised atomically; hub names pass through with a clear error."""

from __future__ import annotations

import pytest

from posttrain import models


def test_hub_names_and_paths_pass_through(tmp_path):
    assert models.resolve_model_name("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    assert models.resolve_model_name(str(tmp_path)) == str(tmp_path)


@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_model_name_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="model_name_or_path is empty"):
        models.resolve_model_name(bad)


def test_embedded_resolves_to_a_complete_folder():
    path = models.resolve_model_name(models.EMBEDDED_MODEL_NAME)
    folder = models.embedded_model_dir()
    assert path == str(folder)
    for name in ("config.json", "model.safetensors", "tokenizer.json", models._DONE_MARKER):
        assert (folder / name).is_file(), name
    config = (folder / "config.json").read_text()
    assert "quantization_config" not in config  # loads as a plain, trainable checkpoint


def test_unreachable_model_error_names_it_and_suggests_embedded(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelNotAvailableError) as info:
        models.load_tokenizer("no-such-org/no-such-model-xyz")
    message = str(info.value)
    assert "no-such-org/no-such-model-xyz" in message
    assert "embedded" in message


def test_interrupted_conversion_is_redone_not_loaded(tmp_path, monkeypatch):
    """A folder without the completion marker (a crash mid-way) is never used; conversion runs again."""
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path))
    half = models.embedded_model_dir()
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # what a crash could leave behind

    calls = []

    def fake_gguf_path():
        calls.append(1)
        raise models.ModelNotAvailableError("stop here")

    monkeypatch.setattr(models, "embedded_gguf_path", fake_gguf_path)
    with pytest.raises(models.ModelNotAvailableError):
        models.resolve_model_name("embedded")
    assert calls, "a folder without the done marker must trigger a fresh conversion"


def test_conversion_failure_leaves_no_partial_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path))

    import transformers

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", explode)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        models.materialize_embedded_model()
    parent = models.embedded_model_dir().parent
    leftovers = [p.name for p in parent.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []

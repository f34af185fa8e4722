"""Offline by default: every file a loader needs is checked before loading, and loaders never fetch."""

import json

import pytest

from prefopt import hub
from tests import ROOT


def _pipeline(root, weights=True):
    root.mkdir()
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "X", "transformer": ["diffusers", "T"], "scheduler": ["diffusers", "S"],
        "tokenizer": ["transformers", "Tok"], "safety_checker": [None, None]}))
    for name in ("transformer", "scheduler", "tokenizer"):
        (root / name).mkdir()
        (root / name / "config.json").write_text("{}")
    if weights:
        (root / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    return root


def test_a_complete_pipeline_directory_passes(tmp_path):
    assert hub.missing_file(str(_pipeline(tmp_path / "p")), "model_index.json") is None


def test_a_pipeline_without_a_components_weights_is_named(tmp_path):
    root = _pipeline(tmp_path / "p", weights=False)
    message = hub.missing_weights_message(str(root), "HunyuanVideo", "model_index.json", "`pretrained`")
    assert message.startswith(f"HunyuanVideo weights `{root}` are incomplete: `transformer/a weights file")


def test_a_sharded_model_missing_a_shard_is_named(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    (root / "config.json").write_text("{}")
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-1.safetensors",
                                                                                  "b": "model-2.safetensors"}}))
    (root / "model-1.safetensors").write_bytes(b"x")
    assert hub.missing_file(str(root), "config.json") == "model-2.safetensors"
    (root / "model-2.safetensors").write_bytes(b"x")
    assert hub.missing_file(str(root), "config.json") is None


def test_a_hub_id_that_is_not_cached_is_missing_and_the_message_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    message = hub.missing_weights_message("org/model", "CLIP", "config.json", "the reward's `model` option")
    assert "`hf download org/model --local-dir DIR`" in message and "run.allow_downloads: true" in message


@pytest.mark.parametrize("allowed", [False, True])
def test_loaders_are_offline_unless_downloads_are_allowed(allowed):
    assert hub.pretrained_kwargs() == {"local_files_only": True}
    with hub.downloads(allowed):
        assert hub.pretrained_kwargs() == {"local_files_only": not allowed}
    assert hub.pretrained_kwargs() == {"local_files_only": True}  # as before the block: no process-wide change


def _call_text(text: str, start: int) -> str:
    """The argument text of the call whose `(` is at ``start``."""
    depth = 0
    for end in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        if depth == 0:
            return text[start : end + 1]
    return text[start:]


def test_every_from_pretrained_in_prefopt_passes_the_offline_switch():
    """A source check: a new loader that forgets `pretrained_kwargs()` would fetch from the hub."""
    import re

    root = ROOT
    calls = []
    for path in [*root.glob("prefopt/*.py"), *root.glob("plugins/**/*.py"), *root.glob("recipes/**/*.py")]:
        if path.name == "tiny.py":  # builds random models and saves them; loads nothing from a hub
            continue
        if path.name == "publish.py":  # writes loading code into a model card's text; loads nothing
            continue
        text = path.read_text()
        for match in re.finditer(r"\.from_pretrained\(", text):
            calls.append((f"{path.name}:{text.count(chr(10), 0, match.start()) + 1}",
                          "**pretrained_kwargs()" in _call_text(text, match.end() - 1)))
    assert len(calls) >= 5 and all(ok for _, ok in calls), [where for where, ok in calls if not ok]


def test_one_complete_index_is_enough_when_two_formats_sit_side_by_side(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    (root / "config.json").write_text("{}")
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-1.safetensors"}}))
    (root / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"a": "pytorch_model-1.bin"}}))
    (root / "model-1.safetensors").write_bytes(b"x")  # only the safetensors shards were downloaded
    assert hub.missing_file(str(root), "config.json") is None


def test_a_missing_relative_path_is_not_mistaken_for_a_hub_id():
    message = hub.missing_weights_message("runs/x/model", "CLIP", "config.json", "the reward's `model` option")
    assert "hf download" not in message and "Set the reward's `model` option to a directory" in message

"""Where a run's files live: every path from one place, and the current stages found through the index."""

import json

import pytest

from prefopt.errors import PrefoptError
from prefopt.layout import LORA_WEIGHTS_NAME, RunLayout, StageFolder, sample_name


def test_a_stage_folder_names_every_file_a_stage_or_a_trainer_writes(tmp_path):
    folder = RunLayout(tmp_path).stage("stage1", "0123456789ab")
    assert folder.path == tmp_path / "stage1-0123456789ab"
    assert (folder.stage, folder.digest) == ("stage1", "0123456789ab")
    assert folder.lora == folder.path / "lora" / LORA_WEIGHTS_NAME and folder.adapter.parent == folder.lora_dir
    names = {p.name for p in (folder.marker, folder.config, folder.pairs, folder.pairs_plot, folder.empty_pairs_plot,
                              folder.pairs_jsonl, folder.prompts, folder.table, folder.table_markdown,
                              folder.checkpoints, folder.metrics, folder.cache)}
    assert len(names) == 12  # no two kinds of file share a name
    assert sample_name(7) == "007"


def test_the_current_stage_comes_from_the_index_not_from_rebuilding_a_name(tmp_path):
    layout = RunLayout.of(type("Run", (), {"output_dir": str(tmp_path), "name": "x"}))
    layout.root.mkdir()
    layout.index.write_text(json.dumps({"evaluation": {"hash": "abc", "status": "done"}}))
    assert layout.current("evaluation") == StageFolder(tmp_path / "x" / "evaluation-abc")
    with pytest.raises(PrefoptError, match="names no stage `train`"):
        layout.current("train")

"""The recipe's stage runner: finished work is never deleted, a stage is done only when its output checks,
only folders prefopt made are cleaned, and one run at a time holds a run directory."""

import json
from pathlib import Path

import pytest

from prefopt.errors import PrefoptError
from prefopt.layout import RunLayout, StageFolder
from prefopt.stages import Stage, StageRunner, clean_stage_folders, run_directory_lock

MARKER = StageFolder(Path()).marker.name


def _work(run_dir, text):
    def work(folder: StageFolder):
        (run_dir / f"out-{folder.digest}.txt").write_text(text)
        return f"wrote {text}"
    return work


def _stage(name, covers, make, deliver=lambda folder: folder.digest):
    """A stage that delivers its hash (the tests' stand-in for what a real stage makes)."""
    return Stage(name, [covers], make, deliver)


def _run(run_dir, name, covers, make, deliver=lambda folder: folder.digest, log=print, config=None) -> str:
    return StageRunner(RunLayout(run_dir), log, config=config).run(_stage(name, covers, make, deliver), {}).digest


def test_a_changed_config_runs_in_a_new_folder_and_going_back_reuses_the_old_one(tmp_path):
    first = _run(tmp_path, "train", {"lr": 1}, _work(tmp_path, "a"))
    second = _run(tmp_path, "train", {"lr": 2}, _work(tmp_path, "b"))
    assert first != second and (tmp_path / f"train-{first}").is_dir() and (tmp_path / f"train-{second}").is_dir()
    calls = []
    back = _run(tmp_path, "train", {"lr": 1}, lambda folder: calls.append(folder) or "ran")
    assert back == first and calls == []  # finished earlier: skipped, nothing recomputed
    assert json.loads((tmp_path / "stages.json").read_text())["train"]["hash"] == first


def test_a_stage_is_done_only_when_its_output_checks(tmp_path):
    def broken(folder):
        raise PrefoptError("the final LoRA `x` cannot be read")

    with pytest.raises(PrefoptError, match="cannot be read"):
        _run(tmp_path, "train", {}, _work(tmp_path, "a"), deliver=broken)
    index = json.loads((tmp_path / "stages.json").read_text())
    digest = index["train"]["hash"]
    assert json.loads((tmp_path / f"train-{digest}" / MARKER).read_text())["status"] == "running"
    calls = []
    _run(tmp_path, "train", {}, lambda folder: calls.append(folder.digest) or "again")
    assert calls == [digest]  # not skipped: it never finished


def test_clean_removes_only_superseded_folders_that_prefopt_made(tmp_path):
    old = _run(tmp_path, "stage1", {"lr": 1}, _work(tmp_path, "a"))
    new = _run(tmp_path, "stage1", {"lr": 2}, _work(tmp_path, "b"))
    notes = tmp_path / "stage1-my-notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    forged = tmp_path / "stage1-0123456789ab"  # looks like a stage folder, but prefopt did not make it
    forged.mkdir()
    assert clean_stage_folders(RunLayout(tmp_path), {}, dry_run=True) == [tmp_path / f"stage1-{old}"]
    assert (tmp_path / f"stage1-{old}").is_dir()
    assert clean_stage_folders(RunLayout(tmp_path), {"stage1": new}) == [tmp_path / f"stage1-{old}"]
    assert not (tmp_path / f"stage1-{old}").exists()
    assert (tmp_path / f"stage1-{new}").is_dir() and (notes / "notes.txt").is_file() and forged.is_dir()


def test_a_second_run_in_the_same_directory_is_refused_naming_the_holder(tmp_path):
    import os

    holder = rf"is in use by prefopt process {os.getpid()} "
    layout = RunLayout(tmp_path)
    with run_directory_lock(layout), pytest.raises(PrefoptError, match=holder), run_directory_lock(layout):
        pass
    with run_directory_lock(layout):  # released on exit (and by the OS when the holder dies)
        pass




def test_clean_keeps_the_current_configs_folders_and_refuses_before_a_run_finished(tmp_path):
    layout = RunLayout(tmp_path)
    with pytest.raises(PrefoptError, match="missing or unreadable"):
        clean_stage_folders(layout, {})
    first = _run(tmp_path, "stage1", {"lr": 1}, _work(tmp_path, "a"))
    second = _run(tmp_path, "stage1", {"lr": 2}, _work(tmp_path, "b"))
    assert clean_stage_folders(layout, {"stage1": first}, dry_run=True) == []  # the config asked for: kept

    def interrupted(folder):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "stage1", {"lr": 3}, interrupted)
    with pytest.raises(PrefoptError, match="stage `stage1` of the run .* has not finished"):
        clean_stage_folders(layout, {})
    assert (tmp_path / f"stage1-{first}").is_dir() and (tmp_path / f"stage1-{second}").is_dir()


def test_a_changed_stage_drops_the_later_stages_of_the_old_chain_from_the_index(tmp_path):
    runner = StageRunner(RunLayout(tmp_path))
    runner.run(_stage("a", {"x": 1}, _work(tmp_path, "a")), {})
    runner.run(_stage("b", {}, _work(tmp_path, "b")), {})
    changed = StageRunner(RunLayout(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        changed.run(_stage("a", {"x": 2}, lambda folder: (_ for _ in ()).throw(KeyboardInterrupt)), {})
    index = json.loads((tmp_path / "stages.json").read_text())
    assert list(index) == ["a"] and index["a"]["status"] == "running"  # no mix of the old b with the new a




def test_a_finished_stage_whose_output_was_damaged_since_runs_again(tmp_path):
    """Re-verified when skipped: a LoRA truncated after its stage finished is not trusted as `done earlier`."""
    output = {}

    def make(folder):
        (tmp_path / "lora.txt").write_text("whole")
        output["ran"] = output.get("ran", 0) + 1
        return "trained"

    def deliver(folder):
        if (tmp_path / "lora.txt").read_text() != "whole":
            raise PrefoptError("the final LoRA `lora.txt` cannot be read.")
        return tmp_path / "lora.txt"

    _run(tmp_path, "train", {}, make, deliver)
    _run(tmp_path, "train", {}, make, deliver)
    assert output["ran"] == 1  # whole: skipped
    (tmp_path / "lora.txt").write_text("who")  # truncated afterwards
    messages = []
    _run(tmp_path, "train", {}, make, deliver, log=messages.append)
    assert output["ran"] == 2 and (tmp_path / "lora.txt").read_text() == "whole"
    assert "finished earlier, but the final LoRA `lora.txt` cannot be read. Running it again." in messages[0]


def test_each_stage_takes_the_deliveries_it_names_and_a_run_result_records_them(tmp_path):
    """Explicit inputs: a stage gets what earlier stages delivered (read back from their folders when skipped)."""
    seen = []
    stages = [Stage("a", [1], lambda folder: (folder.path / "x.txt").write_text("7") and "made a",
                    lambda folder: int((folder.path / "x.txt").read_text())),
              Stage("b", [2], lambda folder, a: seen.append(a) or "made b", lambda folder, a: a * 2, inputs=("a",))]
    result = StageRunner(RunLayout(tmp_path)).run_all(stages)
    again = StageRunner(RunLayout(tmp_path)).run_all(stages)  # skipped: deliveries read back, not recomputed
    assert seen == [7] and result["b"] == again["b"] == 14 and again.folder("a").path.is_dir()
    assert list(json.loads((tmp_path / "stages.json").read_text())) == ["a", "b"]


def test_clean_never_follows_or_removes_a_symlinked_folder(tmp_path):
    """A link to another run's finished stage folder carries that folder's marker; clean leaves link and target."""
    other, run = tmp_path / "other", tmp_path / "run"
    kept = _run(other, "stage1", {"lr": 1}, _work(other, "a"))
    _run(run, "stage1", {"lr": 2}, _work(run, "b"))
    old = _run(run, "stage1", {"lr": 3}, _work(run, "c"))
    _run(run, "stage1", {"lr": 2}, _work(run, "b"))
    (run / f"stage1-{kept}").symlink_to(other / f"stage1-{kept}", target_is_directory=True)
    assert clean_stage_folders(RunLayout(run), {}) == [run / f"stage1-{old}"]
    assert (run / f"stage1-{kept}").is_symlink() and (other / f"stage1-{kept}" / MARKER).is_file()


def test_each_stage_folder_records_its_config_and_the_run_record_waits_for_the_end(tmp_path):
    """`config.json` of the run describes the last configuration that finished; a failing one changes only its own
    stage folder's record."""
    _run(tmp_path, "train", {"lr": 1}, _work(tmp_path, "a"), config={"lr": 1})
    runner = StageRunner(RunLayout(tmp_path), config={"lr": 1})
    runner.run(_stage("train", {"lr": 1}, _work(tmp_path, "a")), {})
    runner.finish()
    assert json.loads((tmp_path / "config.json").read_text()) == {"lr": 1}

    def fails(folder):
        raise PrefoptError("the training loss became nan")

    with pytest.raises(PrefoptError):
        _run(tmp_path, "train", {"lr": 1e30}, fails, config={"lr": 1e30})
    assert json.loads((tmp_path / "config.json").read_text()) == {"lr": 1}
    failed = json.loads((tmp_path / "stages.json").read_text())["train"]["hash"]
    assert json.loads((tmp_path / f"train-{failed}" / "config.json").read_text()) == {"lr": 1e30}

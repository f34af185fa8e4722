"""The recipe's stage runner: finished work is never deleted, a stage is done only when its output checks,
only folders prefopt made are cleaned, and one run at a time holds a run directory."""

import json
import logging

import pytest

from prefopt.errors import PrefoptError
from prefopt_recipes.common.stages import MARKER, StageRunner, clean_stage_folders, run_directory_lock


def _work(run_dir, text):
    def work(digest):
        (run_dir / f"out-{digest}.txt").write_text(text)
        return f"wrote {text}"
    return work


def test_a_changed_config_runs_in_a_new_folder_and_going_back_reuses_the_old_one(tmp_path):
    first = StageRunner(tmp_path).run("train", {"lr": 1}, _work(tmp_path, "a"))
    second = StageRunner(tmp_path).run("train", {"lr": 2}, _work(tmp_path, "b"))
    assert first != second and (tmp_path / f"train-{first}").is_dir() and (tmp_path / f"train-{second}").is_dir()
    calls = []
    back = StageRunner(tmp_path).run("train", {"lr": 1}, lambda digest: calls.append(digest) or "ran")
    assert back == first and calls == []  # finished earlier: skipped, nothing recomputed
    assert json.loads((tmp_path / "stages.json").read_text())["train"]["hash"] == first


def test_a_stage_is_done_only_when_its_output_checks(tmp_path):
    def broken(digest):
        raise PrefoptError("the final LoRA `x` cannot be read")

    with pytest.raises(PrefoptError, match="cannot be read"):
        StageRunner(tmp_path).run("train", {}, _work(tmp_path, "a"), verify=broken)
    digest = StageRunner(tmp_path).stage_hash({})
    assert json.loads((tmp_path / f"train-{digest}" / MARKER).read_text())["status"] == "running"
    calls = []
    StageRunner(tmp_path).run("train", {}, lambda d: calls.append(d) or "again", verify=lambda d: None)
    assert calls == [digest]  # not skipped: it never finished


def test_clean_removes_only_superseded_folders_that_prefopt_made(tmp_path):
    old = StageRunner(tmp_path).run("stage1", {"lr": 1}, _work(tmp_path, "a"))
    new = StageRunner(tmp_path).run("stage1", {"lr": 2}, _work(tmp_path, "b"))
    notes = tmp_path / "stage1-my-notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    forged = tmp_path / "stage1-0123456789ab"  # looks like a stage folder, but prefopt did not make it
    forged.mkdir()
    assert clean_stage_folders(tmp_path, {}, dry_run=True) == [tmp_path / f"stage1-{old}"]
    assert (tmp_path / f"stage1-{old}").is_dir()
    assert clean_stage_folders(tmp_path, {"stage1": new}) == [tmp_path / f"stage1-{old}"]
    assert not (tmp_path / f"stage1-{old}").exists()
    assert (tmp_path / f"stage1-{new}").is_dir() and (notes / "notes.txt").is_file() and forged.is_dir()


def test_a_second_run_in_the_same_directory_is_refused_naming_the_holder(tmp_path):
    import os

    holder = rf"is in use by prefopt process {os.getpid()} "
    with run_directory_lock(tmp_path), pytest.raises(PrefoptError, match=holder), run_directory_lock(tmp_path):
        pass
    with run_directory_lock(tmp_path):  # released on exit (and by the OS when the holder dies)
        pass


def test_progress_without_a_terminal_logs_plain_lines(monkeypatch, caplog):
    import io

    from prefopt import progress

    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())  # not a terminal (a SLURM or nohup log)
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.0)
    with caplog.at_level(logging.INFO, logger="prefopt"), progress.progress_bar("generating", 4) as bar:
        for _ in range(4):
            bar.advance(loss=0.5)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("generating: 1/4 (25%), 0:00:00 elapsed, ~0:00:00 left  loss 0.5")
    assert lines[-1].startswith("generating: 4/4 (100%)") and len(lines) == 5


def test_clean_keeps_the_current_configs_folders_and_refuses_before_a_run_finished(tmp_path):
    with pytest.raises(PrefoptError, match="missing or unreadable"):
        clean_stage_folders(tmp_path, {})
    first = StageRunner(tmp_path).run("stage1", {"lr": 1}, _work(tmp_path, "a"))
    second = StageRunner(tmp_path).run("stage1", {"lr": 2}, _work(tmp_path, "b"))
    assert clean_stage_folders(tmp_path, {"stage1": first}, dry_run=True) == []  # the config asked for: kept

    def interrupted(digest):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        StageRunner(tmp_path).run("stage1", {"lr": 3}, interrupted)
    with pytest.raises(PrefoptError, match="stage `stage1` of the run .* has not finished"):
        clean_stage_folders(tmp_path, {})
    assert (tmp_path / f"stage1-{first}").is_dir() and (tmp_path / f"stage1-{second}").is_dir()


def test_a_changed_stage_drops_the_later_stages_of_the_old_chain_from_the_index(tmp_path):
    runner = StageRunner(tmp_path)
    runner.run("a", {"x": 1}, _work(tmp_path, "a"))
    runner.run("b", {}, _work(tmp_path, "b"))
    changed = StageRunner(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        changed.run("a", {"x": 2}, lambda digest: (_ for _ in ()).throw(KeyboardInterrupt))
    index = json.loads((tmp_path / "stages.json").read_text())
    assert list(index) == ["a"] and index["a"]["status"] == "running"  # no mix of the old b with the new a


def test_plain_progress_after_a_resume_estimates_from_this_processs_rate(monkeypatch):
    from prefopt import progress

    clock = iter([0.0, 10.0, 10.0])  # the start; one advance 10 s later, and its line
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    lines = []
    monkeypatch.setattr(progress.logger, "info", lambda *args: lines.append(args[0] % args[1:]))
    plain = progress._PlainLines("training", total=100, completed=90, interval=5.0)
    plain.advance(1)  # 1 step in 10 s: 9 steps left ≈ 90 s (the 90 earlier steps must not count)
    assert lines == ["training: 91/100 (91%), 0:00:10 elapsed, ~0:01:30 left"]


def test_a_finished_stage_whose_output_was_damaged_since_runs_again(tmp_path):
    """Re-verified when skipped: a LoRA truncated after its stage finished is not trusted as `done earlier`."""
    output = {}

    def work(digest):
        (tmp_path / "lora.txt").write_text("whole")
        output["ran"] = output.get("ran", 0) + 1
        return "trained"

    def verify(digest):
        if (tmp_path / "lora.txt").read_text() != "whole":
            raise PrefoptError("the final LoRA `lora.txt` cannot be read.")

    StageRunner(tmp_path).run("train", {}, work, verify)
    StageRunner(tmp_path).run("train", {}, work, verify)
    assert output["ran"] == 1  # whole: skipped
    (tmp_path / "lora.txt").write_text("who")  # truncated afterwards
    messages = []
    StageRunner(tmp_path, messages.append).run("train", {}, work, verify)
    assert output["ran"] == 2 and (tmp_path / "lora.txt").read_text() == "whole"
    assert "finished earlier, but the final LoRA `lora.txt` cannot be read. Running it again." in messages[0]


def test_clean_never_follows_or_removes_a_symlinked_folder(tmp_path):
    """A link to another run's finished stage folder carries that folder's marker; clean leaves link and target."""
    other, run = tmp_path / "other", tmp_path / "run"
    kept = StageRunner(other).run("stage1", {"lr": 1}, _work(other, "a"))
    StageRunner(run).run("stage1", {"lr": 2}, _work(run, "b"))
    old = StageRunner(run).run("stage1", {"lr": 3}, _work(run, "c"))
    StageRunner(run).run("stage1", {"lr": 2}, _work(run, "b"))
    (run / f"stage1-{kept}").symlink_to(other / f"stage1-{kept}", target_is_directory=True)
    assert clean_stage_folders(run, {}) == [run / f"stage1-{old}"]
    assert (run / f"stage1-{kept}").is_symlink() and (other / f"stage1-{kept}" / MARKER).is_file()


def test_each_stage_folder_records_its_config_and_the_run_record_waits_for_the_end(tmp_path):
    """`config.json` of the run describes the last configuration that finished; a failing one changes only its own
    stage folder's record."""
    StageRunner(tmp_path, config={"lr": 1}).run("train", {"lr": 1}, _work(tmp_path, "a"))
    runner = StageRunner(tmp_path, config={"lr": 1})
    runner.run("train", {"lr": 1}, _work(tmp_path, "a"))
    runner.finish()
    assert json.loads((tmp_path / "config.json").read_text()) == {"lr": 1}

    def fails(digest):
        raise PrefoptError("the training loss became nan")

    with pytest.raises(PrefoptError):
        StageRunner(tmp_path, config={"lr": 1e30}).run("train", {"lr": 1e30}, fails)
    assert json.loads((tmp_path / "config.json").read_text()) == {"lr": 1}
    failed = StageRunner(tmp_path).stage_hash({"lr": 1e30})
    assert json.loads((tmp_path / f"train-{failed}" / "config.json").read_text()) == {"lr": 1e30}

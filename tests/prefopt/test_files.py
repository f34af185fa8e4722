"""Files prefopt writes are whole under their final name or not there at all; a full disk is one named error."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from prefopt.errors import PrefoptError
from prefopt.files import (
    is_temporary,
    read_jsonl,
    temporary_path,
    write_file,
    write_folder,
    write_json,
    write_text,
)
from tests import ROOT

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


def _full_disk_at(path: Path) -> None:
    """The next write of ``path`` lands on /dev/full, where every write fails with ENOSPC: a real full disk for
    that one file, from the kernel, whatever program writes it."""
    os.symlink("/dev/full", temporary_path(path))


def test_a_failed_write_leaves_the_earlier_file_whole_and_no_temporary_behind(tmp_path):
    target = tmp_path / "table.json"
    write_json(target, {"rows": 1})

    def torn(tmp):
        tmp.write_text('{"rows": 2, "half')
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        write_file(target, torn)
    assert json.loads(target.read_text()) == {"rows": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]


def test_a_write_that_does_not_check_never_gets_the_final_name(tmp_path):
    def check(tmp):
        raise PrefoptError("it read back wrong")

    with pytest.raises(PrefoptError, match="read back wrong"):
        write_file(tmp_path / "x.bin", lambda tmp: tmp.write_bytes(b"abc"), check)
    assert list(tmp_path.iterdir()) == []


@needs_dev_full
def test_a_full_disk_is_enospc_naming_the_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "notes.txt"
    _full_disk_at(target)
    with pytest.raises(OSError) as raised:
        write_text(target, "x" * 100_000)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # not even the temporary (here: the link to /dev/full)


@needs_dev_full
def test_ffmpeg_on_a_full_disk_leaves_no_torn_video_under_its_final_name(tmp_path):
    """imageio returns quietly when ffmpeg cannot write (a torn `003.mp4` that every later run failed on); prefopt
    reads ffmpeg's status and words, and checks the file before it takes its name."""
    from prefopt.media import read_media, write_media

    frames = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    target = tmp_path / "003.mp4"
    _full_disk_at(target)
    with pytest.raises(OSError) as raised:
        write_media(target, frames)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert not target.exists() and not os.path.lexists(temporary_path(target))
    write_media(target, frames)  # with space, the same call writes it whole
    assert read_media(target).shape == (8, 32, 32, 3)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 kB file system (tmpfs): a real full disk for writers that replace a link instead of following it."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True,
                             text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a small tmpfs needs root: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("suffix", [".png", ".safetensors", ".parquet"])
def test_every_writer_reports_a_full_disk_as_enospc(small_disk, suffix):
    """Pillow, safetensors (which says `os error 28`) and pyarrow all end in the one error the CLI names."""
    target = small_disk / f"out{suffix}"
    with pytest.raises(OSError) as raised:
        if suffix == ".png":
            from prefopt.media import write_media

            write_media(target, np.random.default_rng(0).integers(0, 255, (1, 256, 256, 3), dtype=np.uint8))
        elif suffix == ".safetensors":
            from prefopt.data import save_tensors

            save_tensors(target, {"w": torch.ones(100_000)})
        else:
            import pyarrow as pa

            from prefopt.files import write_parquet

            write_parquet(target, pa.table({"a": np.random.default_rng(0).random(100_000)}))
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert list(small_disk.iterdir()) == []


def test_a_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "lora"
    write_folder(target, lambda tmp: (tmp.mkdir(), (tmp / "a.txt").write_text("first")), replaces="a.txt")

    def half(tmp):
        tmp.mkdir()
        (tmp / "a.txt").write_text("second")
        raise OSError(errno.EIO, "disk failed")

    with pytest.raises(OSError):
        write_folder(target, half, replaces="a.txt")
    assert (target / "a.txt").read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["lora"]


def test_a_folder_prefopt_did_not_write_is_never_replaced(tmp_path):
    """`run.build_tiny_models` pointed at a folder of the user's (no `model_index.json` in it): one sentence, and
    the folder is kept as it was."""
    mine = tmp_path / "models"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(PrefoptError, match=r"`.*models` already exists and is not a folder prefopt wrote"):
        write_folder(mine, lambda tmp: tmp.mkdir(), replaces="model_index.json")
    assert (mine / "notes.txt").read_text() == "mine"


def test_what_killed_writers_left_is_removed_and_nothing_else(tmp_path):
    from prefopt.files import remove_temporaries

    (tmp_path / "media").mkdir()
    keep = [tmp_path / "media" / "003.mp4", tmp_path / ".prefopt-stage.json", tmp_path / "metrics.jsonl"]
    for path in keep:
        path.write_text("whole")
    stale = [temporary_path(tmp_path / "media" / "004.mp4"), tmp_path / ".lora.4242.tmp" / "adapter.safetensors",
             tmp_path / "checkpoints" / "step-000010.tmp" / "optimizer.pt"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("torn")
    remove_temporaries(tmp_path)
    assert all(p.is_file() for p in keep) and not any(os.path.lexists(p) for p in stale)
    assert not (tmp_path / ".lora.4242.tmp").exists() and (tmp_path / "checkpoints").is_dir()


def test_temporary_names_are_recognised():
    assert is_temporary(temporary_path(Path("/r/media/003.mp4")))
    assert is_temporary("/r/checkpoints/step-000010.tmp/optimizer.pt")
    assert not is_temporary("/r/media/003.mp4") and not is_temporary("/r/.prefopt-stage.json")


def test_a_torn_last_line_of_the_metrics_log_is_skipped(tmp_path, caplog):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 0.7}\n{"step": 2, "loss": 0.6}\n{"step": 3, "lo')
    assert [row["step"] for row in read_jsonl(log)] == [1, 2]
    assert "torn line" in caplog.text and str(log) in caplog.text






# --- every file a recipe run writes ------------------------------------------------------------------

_WRITES: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple) -> None:
    """Records files opened for writing, links and renames, and the output of subprocesses (ffmpeg), while a test
    collects them (an audit hook cannot be removed, so it is installed once and is idle otherwise)."""
    if _WRITES is None:
        return
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(
            flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writing:
            _WRITES.append(("open", os.fsdecode(args[0])))
    elif event == "subprocess.Popen" and "ffmpeg" in os.fsdecode(args[1][0]):
        _WRITES.append(("ffmpeg", os.fsdecode(args[1][-1])))
    elif event == "os.rename":  # os.replace too
        _WRITES.append(("renamed", os.fsdecode(args[1])))


@pytest.fixture
def recorded_writes():
    global _WRITES
    if not getattr(sys, "_prefopt_audit_installed", False):
        sys.addaudithook(_audit)
        sys._prefopt_audit_installed = True
    _WRITES = []
    try:
        yield _WRITES
    finally:
        _WRITES = None


APPENDED = ("metrics.jsonl", ".prefopt.lock")  # appended to line by line (read_jsonl), and the run's lock


@pytest.mark.slow
def test_every_file_a_recipe_run_writes_goes_through_a_temporary_name(tmp_path, recorded_writes):
    """The whole quickstart (every stage, report included): no file under its final name is opened for writing,
    except the appended metrics log and the lock, and anything under /dev or the system's temporary folder."""
    from prefopt.cli import main

    models = tmp_path / "tiny-models"
    code = main(["run", str(ROOT / "recipes" / "quickstart.yaml"), f"run.output_dir={tmp_path}", *QUICKSTART_SMALL,
                 f"backbone.options.pretrained={models}/hunyuan-video", f"rewards.semantic.options.model={models}/clip"])
    assert code == 0
    written = [(kind, path) for kind, path in recorded_writes if path.startswith(str(tmp_path))]
    assert len(written) > 50 and any(kind == "ffmpeg" for kind, _ in written)
    direct = [path for kind, path in written
              if kind != "renamed" and not is_temporary(path) and Path(path).name not in APPENDED]
    assert direct == []
    # Writers Python does not see (safetensors in Rust, pyarrow in C++): every file the run left arrived by a
    # rename, itself or a folder holding it.
    renamed = {Path(path) for kind, path in written if kind == "renamed"}
    left = [p for p in tmp_path.rglob("*") if p.is_file() and p.name not in APPENDED]
    unrenamed = [p for p in left if p not in renamed and not renamed.intersection(p.parents)]
    assert len(left) > 50 and unrenamed == []


QUICKSTART_SMALL = ["video.num_frames=5", "video.height=96", "video.width=96", "repository.lora_videos=4",
                    "repository.base_videos=4", "repository.regenerate_videos=4", "prompts.count=2",
                    "prompts.eval_count=1", "evaluation.videos_per_prompt=1", "identity_lora.max_steps=2",
                    "dpo_stage1.max_steps=2", "dpo_stage2.max_steps=2"]

"""Staged, resumable execution in a run directory.

Each stage runs in its own folder ``<stage>-<hash>``, where the hash covers the stage's configuration, the
content of its inputs (e.g. the reference photos' bytes) and the previous stage's hash, so changing
anything upstream reruns a stage and every stage after it, in new folders. Folders are never deleted by a
run: a finished stage's folder records its status in a marker file (:data:`MARKER`), so going back to an
earlier configuration finds its stages finished and skips them. An interrupted stage runs again in the
same folder and resumes from what it had written (generation and scoring skip finished items, training
resumes from its last checkpoint). ``prefopt clean`` removes folders of superseded configurations, and
only folders that carry prefopt's marker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefopt.config import to_dict
from prefopt.errors import PrefoptError
from prefopt.files import remove_temporaries, write_json
from prefopt_recipes.common.distributed import barrier, is_main

STATE_FILE = "stages.json"
MARKER = ".prefopt-stage.json"
CONFIG_FILE = "config.json"  # in the run folder (the last configuration that finished) and in each stage folder


def config_hash(*parts: Any) -> str:
    blob = json.dumps([to_dict(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (inputs whose content, not only their path, decides a stage's result)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as e:
        raise PrefoptError(f"input file `{path}` cannot be read ({e.strerror or e}); the stages' hashes cover its "
                           "content, so it must be there.") from e
    return digest.hexdigest()


def read_marker(folder: Path) -> dict:
    """The stage marker of a folder prefopt made, or {} for any other folder (or a torn marker)."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) and folder.name == f"{marker.get('stage')}-{marker.get('hash')}" else {}


class StageRunner:
    """Runs named stages in order, skipping finished ones whose hash has not changed."""

    def __init__(self, run_dir: Path, log: Callable[[str], None] = print, config: Any = None):
        self.run_dir = run_dir
        self.config = to_dict(config)
        self.log = log if is_main() else (lambda message: None)
        self.previous_hash = ""
        self.previous_state: dict[str, dict] = self._load()
        self.state: dict[str, dict] = {}
        if is_main() and run_dir.is_dir():  # what killed writers left (the caller holds the run's lock)
            remove_temporaries(run_dir)
        barrier()

    def _load(self) -> dict:
        path = self.run_dir / STATE_FILE
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:
            return {}  # a torn index is rebuilt from the stage markers as the run goes

    def _save(self) -> None:
        if is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / STATE_FILE, {**self.previous_state, **self.state})

    def stage_hash(self, config: Any) -> str:
        return config_hash(self.previous_hash, config)

    def run(self, name: str, config: Any, work: Callable[[str], str], verify: Callable[[str], None] | None = None) -> str:
        """Run ``work(stage_hash) -> one-line summary`` unless its folder says it finished; ``verify(hash)``
        checks what the stage delivered (raises if it is incomplete) before the stage is recorded done."""
        digest = self.stage_hash(config)
        self.previous_hash = digest
        folder = self.run_dir / f"{name}-{digest}"
        marker = read_marker(folder)
        if marker.get("status") == "done":
            problem = _check(verify, digest)
            if problem is None:
                self.state[name] = marker
                self._save()
                self.log(f"[dim]✓ {name}: done earlier ({marker['seconds']:.1f} s) — {marker['summary']}[/dim]")
                return digest
            # What a finished stage delivered was damaged since (a truncated LoRA, a deleted file): run it again in
            # its folder, which resumes from what is still whole (training from its last checkpoint).
            self.log(f"[yellow]↻ {name}: finished earlier, but {problem} Running it again.[/yellow]")
        earlier = self.previous_state.get(name, {}).get("hash")
        if earlier not in (None, digest):
            self.log(f"[yellow]↻ {name}: configuration or inputs changed; running it in {folder.name}/ "
                     f"({name}-{earlier}/ is kept; `prefopt clean` removes superseded stages)[/yellow]")
            self._forget_from(name)  # the index names one chain of stages, never a mix of two configs
        started = time.perf_counter()
        record = {"stage": name, "hash": digest, "status": "running", "started": time.time()}
        if is_main():
            folder.mkdir(parents=True, exist_ok=True)
            if self.config is not None:  # the configuration that made this folder, whatever later configs do
                write_json(folder / CONFIG_FILE, self.config)
            write_json(folder / MARKER, record)
        self.state[name] = record
        self._save()
        barrier()
        summary = work(digest)
        if verify is not None:
            verify(digest)
        barrier()
        record = {**record, "status": "done", "seconds": time.perf_counter() - started, "summary": summary}
        if is_main():
            write_json(folder / MARKER, record)
        self.state[name] = record
        self._save()
        self.log(f"[green]✓ {name}[/green] ({record['seconds']:.1f} s): {summary}")
        return digest

    def finish(self) -> None:
        """Every stage of the configuration has finished: the run's ``config.json`` now describes its folders (it
        is written only here, so a configuration that fails leaves the record of the last finished one)."""
        if is_main() and self.config is not None:
            write_json(self.run_dir / CONFIG_FILE, self.config)

    def keep_only(self, names: list[str]) -> None:
        """Drop index entries of stages this configuration does not have (a run with fewer rounds than the last
        one), so the index names one chain and `prefopt clean` sees the rest as superseded."""
        self.previous_state = {k: v for k, v in self.previous_state.items() if k in names}
        self.state = {k: v for k, v in self.state.items() if k in names}
        self._save()

    def _forget_from(self, name: str) -> None:
        names = list(self.previous_state)
        for later in names[names.index(name):]:
            self.previous_state.pop(later)

    def timings(self) -> dict[str, float]:
        return {name: record.get("seconds", 0.0) for name, record in self.state.items() if record.get("status") == "done"}


def _check(verify: Callable[[str], None] | None, digest: str) -> str | None:
    """None when a finished stage's output still checks, else the one-sentence reason it does not."""
    if verify is None:
        return None
    try:
        verify(digest)
    except PrefoptError as e:
        return str(e)
    return None


def planned_hashes(plan: list[tuple[str, Any]]) -> dict[str, str]:
    """The stage hashes a configuration gives, ``(name, what its hash covers)`` in order (as StageRunner chains them)."""
    hashes, previous = {}, ""
    for name, covered in plan:
        previous = hashes[name] = config_hash(previous, covered)
    return hashes


def superseded_stage_folders(run_dir: Path, keep: dict[str, str]) -> list[Path]:
    """Folders prefopt made for stages (they carry its marker) that neither the run's index nor ``keep``
    (stage → hash, e.g. the current configuration's) names. Refuses while the index is missing, unreadable or
    names a stage that has not finished: a replacement is removed only after it has finished."""
    index_file = run_dir / STATE_FILE
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as e:
        raise PrefoptError(f"`{index_file}` is missing or unreadable, so prefopt cannot tell finished stages from "
                           "superseded ones; run `prefopt run` first.") from e
    unfinished = [name for name, record in index.items() if record.get("status") != "done"]
    if unfinished:
        raise PrefoptError(f"stage `{unfinished[0]}` of the run in `{run_dir}` has not finished; finish the run "
                           "(re-run `prefopt run`) before cleaning, so nothing it replaces is removed too early.")
    names = {f"{name}-{record.get('hash')}" for name, record in index.items()}
    names |= {f"{name}-{digest}" for name, digest in keep.items()}
    # A symlink is never a folder prefopt made (it makes real folders), whatever its target holds: not followed.
    return sorted(folder for folder in run_dir.iterdir()
                  if not folder.is_symlink() and folder.is_dir() and folder.name not in names and read_marker(folder))


def clean_stage_folders(run_dir: Path, keep: dict[str, str], dry_run: bool = False) -> list[Path]:
    """Remove superseded stage folders (only ones with prefopt's marker); returns what was (or would be) removed."""
    folders = superseded_stage_folders(run_dir, keep)
    if not dry_run:
        for folder in folders:
            shutil.rmtree(folder)
    return folders


def clean_run(run_dir: Path, plan: list[tuple[str, Any]], dry_run: bool = False) -> list[Path]:
    """``prefopt clean`` for a staged recipe: under the run's lock, remove the stage folders that neither the run's
    index nor ``plan`` (the configuration's ``(stage, what its hash covers)``, in order) names."""
    if not run_dir.is_dir():
        raise PrefoptError(f"no run at `{run_dir}`: nothing to clean.")
    with run_directory_lock(run_dir):
        return clean_stage_folders(run_dir, planned_hashes(plan), dry_run=dry_run)


LOCK_FILE = ".prefopt.lock"


@contextlib.contextmanager
def run_directory_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory (main process only); a second run in the same directory
    stops at once with one sentence naming the process that holds it. The OS drops the lock when the holder
    dies, so a killed run never leaves the directory locked."""
    if not is_main():
        yield
        return
    import fcntl

    path = run_dir / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise PrefoptError(f"run directory `{run_dir}` is in use by {holder}; wait for it to finish or choose "
                               "another `run.name`.") from e
        handle.seek(0)
        handle.truncate()
        handle.write(f"prefopt process {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

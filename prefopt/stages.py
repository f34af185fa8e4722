"""A recipe as a list of typed stages, run resumably in a run folder.

A :class:`Stage` is a value: its name, what its hash covers, the earlier stages whose deliveries it takes, the
function that makes its output in its folder, and the function that reads that output back (which is also how it
is verified). :class:`StageRunner` runs stages in order, each in ``<stage>-<hash>/`` where the hash covers the
stage's configuration, the content of its inputs and the previous stage's hash, so changing anything upstream
reruns a stage and every stage after it, in new folders. Folders are never deleted by a run: a finished stage's
marker records it, so going back to an earlier configuration finds its stages finished and reads what they
delivered (checking it: a stage whose output was damaged since runs again). An interrupted stage runs again in
the same folder and resumes from what it had written. ``prefopt clean`` removes folders of superseded
configurations, and only folders that carry prefopt's marker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefopt.config import to_dict
from prefopt.distributed import barrier, is_main, world
from prefopt.errors import PrefoptError
from prefopt.files import remove_temporaries, write_json
from prefopt.layout import RunLayout, StageFolder
from prefopt.progress import raise_if_interrupted


@dataclass(frozen=True)
class Stage:
    """One step of a recipe.

    ``make(folder, **inputs) -> summary`` does the work in the stage's folder and returns a one-line summary;
    ``deliver(folder, **inputs)`` reads what the stage made and returns it (a LoRA path, prompts, scored items),
    raising a one-sentence :class:`PrefoptError` when it is missing or damaged: a stage is done only when it
    delivers, and a finished stage is skipped only while it still does. ``inputs`` name earlier stages whose
    deliveries both functions take as keyword arguments. ``covers`` is what the stage's hash covers besides the
    previous stage's hash: its configuration and the content of anything else it reads. ``length`` names the option
    of ``covers`` that only says how long the stage trains (``max_steps``, ``epochs``): when nothing else changed, a
    longer stage continues from the newest checkpoint of the shorter one instead of starting over (recipes set it
    only where the result equals the longer run's from scratch: a learning-rate schedule free of the length).
    """

    name: str
    covers: Sequence[Any]
    make: Callable[..., str]
    deliver: Callable[..., Any]
    inputs: tuple[str, ...] = ()
    length: str | None = None


@dataclass(frozen=True)
class Finished:
    """A stage of this run: its folder and hash, what it delivered, how long it took and its summary."""

    name: str
    folder: StageFolder
    digest: str
    delivered: Any
    seconds: float
    summary: str


@dataclass
class RunResult:
    """What a run made, stage by stage: the record reports and studies read (never the recipe object)."""

    layout: RunLayout
    stages: dict[str, Finished] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.stages[name].delivered

    def folder(self, name: str) -> StageFolder:
        return self.stages[name].folder

    def timings(self) -> dict[str, float]:
        return {name: done.seconds for name, done in self.stages.items()}


def config_hash(*parts: Any) -> str:
    blob = json.dumps([to_dict(p, hashed=True) for p in parts], sort_keys=True, default=str)
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
        marker = json.loads(StageFolder(folder).marker.read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) and folder.name == f"{marker.get('stage')}-{marker.get('hash')}" else {}


class StageRunner:
    """Runs stages in order, skipping finished ones whose hash has not changed while their output still checks."""

    def __init__(self, layout: RunLayout, log: Callable[[str], None] = print, config: Any = None):
        self.layout = layout
        self.config = to_dict(config)
        self.log = log if is_main() else (lambda message: None)
        self.previous_hash = self.previous_hash_before = ""
        self.previous_state: dict[str, dict] = self._load()
        self.state: dict[str, dict] = {}
        if is_main() and layout.root.is_dir():  # what killed writers left (the caller holds the run's lock)
            remove_temporaries(layout.root)
        barrier()

    def _load(self) -> dict:
        try:
            return json.loads(self.layout.index.read_text()) if self.layout.index.is_file() else {}
        except ValueError:
            return {}  # a torn index is rebuilt from the stage markers as the run goes

    def _save(self) -> None:
        if is_main():
            self.layout.root.mkdir(parents=True, exist_ok=True)
            write_json(self.layout.index, {**self.previous_state, **self.state})

    def run_all(self, stages: Sequence[Stage]) -> RunResult:
        """Every stage in order; the index then names exactly this configuration's stages."""
        result = RunResult(self.layout)
        for stage in stages:
            result.stages[stage.name] = self.run(stage, result)
        self.keep_only([stage.name for stage in stages])  # e.g. fewer rounds: the old last round is not current
        return result

    def run(self, stage: Stage, earlier: RunResult | Mapping[str, Any]) -> Finished:
        """Run ``stage`` unless its folder says it finished and it still delivers; return what it delivered."""
        raise_if_interrupted()  # a ctrl-C Python dropped (see prefopt.progress) stops the run between stages too
        digest = config_hash(self.previous_hash, stage.covers)
        self.previous_hash_before, self.previous_hash = self.previous_hash, digest
        folder = self.layout.stage(stage.name, digest)
        available = earlier.stages if isinstance(earlier, RunResult) else earlier
        unknown = [name for name in stage.inputs if name not in available]
        if unknown:
            raise PrefoptError(f"stage `{stage.name}` takes `{unknown[0]}`, which no earlier stage delivered (earlier: "
                               f"{', '.join(available) or 'none'}).")
        inputs = {name: earlier[name] for name in stage.inputs}
        marker = read_marker(folder.path)
        if marker.get("status") == "done":
            try:
                delivered = stage.deliver(folder, **inputs)
            except PrefoptError as e:  # damaged since it finished: run it again, resuming from what is whole
                self.log(f"[yellow]↻ {stage.name}: finished earlier, but {e} Running it again.[/yellow]")
            else:
                self.state[stage.name] = marker
                self._save()
                self.log(f"[dim]✓ {stage.name}: done earlier ({marker['seconds']:.1f} s) — {marker['summary']}[/dim]")
                return Finished(stage.name, folder, digest, delivered, marker["seconds"], marker["summary"])
        return self._make(stage, folder, digest, inputs)

    def _make(self, stage: Stage, folder: StageFolder, digest: str, inputs: dict[str, Any]) -> Finished:
        earlier = self.previous_state.get(stage.name, {}).get("hash")
        if earlier not in (None, digest):
            self.log(f"[yellow]↻ {stage.name}: configuration or inputs changed; running it in {folder.name}/ "
                     f"({stage.name}-{earlier}/ is kept; `prefopt clean` removes superseded stages)[/yellow]")
            self._forget_from(stage.name)  # the index names one chain of stages, never a mix of two configs
        started, cpu_started = time.perf_counter(), time.process_time()
        record = {"stage": stage.name, "hash": digest, "status": "running", "started": time.time(),
                  **self._length_record(stage)}
        if is_main():
            folder.path.mkdir(parents=True, exist_ok=True)
            if stage.length is not None:
                self._continue_shorter(stage, folder, record)
            if self.config is not None:  # the configuration that made this folder, whatever later configs do
                write_json(folder.config, self.config)
            write_json(folder.marker, record)
        self.state[stage.name] = record
        self._save()
        barrier()
        summary = stage.make(folder, **inputs)
        delivered = stage.deliver(folder, **inputs)  # done only when what it made reads back whole
        barrier()
        # CPU seconds of this process (every thread): what a study compares at equal compute, whatever else runs.
        record = {**record, "status": "done", "seconds": time.perf_counter() - started,
                  "cpu_seconds": time.process_time() - cpu_started, "processes": world()[1], "summary": summary}
        if is_main():
            write_json(folder.marker, record)
        self.state[stage.name] = record
        self._save()
        self.log(f"[green]✓ {stage.name}[/green] ({record['seconds']:.1f} s): {summary}")
        return Finished(stage.name, folder, digest, delivered, record["seconds"], summary)

    def _length_record(self, stage: Stage) -> dict:
        """What a later, longer configuration needs to find this folder: the hash of everything but the length
        (the previous stage's hash included), and the length."""
        if stage.length is None:
            return {}
        parts = [to_dict(part, hashed=True) for part in stage.covers]
        length = next((p[stage.length] for p in parts if isinstance(p, dict) and stage.length in p), None)
        rest = [{k: v for k, v in p.items() if k != stage.length} if isinstance(p, dict) else p for p in parts]
        return {"family": config_hash(self.previous_hash_before, rest), "length": length}

    def _continue_shorter(self, stage: Stage, folder: StageFolder, record: dict) -> None:
        """Seed a new folder with the newest checkpoint (and metrics) of the longest shorter run of the same
        family, so raising only the length continues training where it ended (kept: the shorter folder)."""
        from prefopt.checkpoint import complete_checkpoints

        if complete_checkpoints(folder.checkpoints) or not isinstance(record.get("length"), int):
            return
        donors = []
        for path in self.layout.root.glob(f"{stage.name}-*"):
            marker = read_marker(path)
            shorter = isinstance(marker.get("length"), int) and marker["length"] < record["length"]
            if path != folder.path and marker.get("family") == record["family"] and shorter:
                done = complete_checkpoints(StageFolder(path).checkpoints)
                if done:
                    donors.append((marker["length"], path, done[-1]))
        if not donors:
            return
        length, path, checkpoint = max(donors)
        record["continued_from"] = f"{path.name}/{checkpoint.relative_to(path)}"  # the folder's result depends on it
        tmp = folder.checkpoints / (checkpoint.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(checkpoint, tmp)
        os.replace(tmp, folder.checkpoints / checkpoint.name)
        if StageFolder(path).metrics.is_file():
            shutil.copyfile(StageFolder(path).metrics, folder.metrics)
        self.log(f"[cyan]↪ {stage.name}: only `{stage.length}` changed ({length} → {record['length']}): continuing "
                 f"from {path.name}/{checkpoint.relative_to(path)} ({path.name}/ is kept)[/cyan]")

    def finish(self) -> None:
        """Every stage of the configuration has finished: the run's ``config.json`` now describes its folders (it
        is written only here, so a configuration that fails leaves the record of the last one that finished)."""
        if is_main() and self.config is not None:
            write_json(self.layout.config, self.config)

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


def planned_hashes(stages: Sequence[Stage]) -> dict[str, str]:
    """The stage hashes a configuration gives (as StageRunner chains them)."""
    hashes, previous = {}, ""
    for stage in stages:
        previous = hashes[stage.name] = config_hash(previous, stage.covers)
    return hashes


def superseded_stage_folders(layout: RunLayout, keep: dict[str, str]) -> list[Path]:
    """Folders prefopt made for stages (they carry its marker) that neither the run's index nor ``keep``
    (stage → hash, e.g. the current configuration's) names. Refuses while the index is missing, unreadable or
    names a stage that has not finished: a replacement is removed only after it has finished."""
    try:
        index = json.loads(layout.index.read_text())
    except (OSError, ValueError) as e:
        raise PrefoptError(f"`{layout.index}` is missing or unreadable, so prefopt cannot tell finished stages from "
                           "superseded ones; run `prefopt run` first.") from e
    unfinished = [name for name, record in index.items() if record.get("status") != "done"]
    if unfinished:
        raise PrefoptError(f"stage `{unfinished[0]}` of the run in `{layout.root}` has not finished; finish the run "
                           "(re-run `prefopt run`) before cleaning, so nothing it replaces is removed too early.")
    names = {f"{name}-{record.get('hash')}" for name, record in index.items()}
    names |= {f"{name}-{digest}" for name, digest in keep.items()}
    # A symlink is never a folder prefopt made (it makes real folders), whatever its target holds: not followed.
    return sorted(folder for folder in layout.root.iterdir()
                  if not folder.is_symlink() and folder.is_dir() and folder.name not in names and read_marker(folder))


def clean_stage_folders(layout: RunLayout, keep: dict[str, str], dry_run: bool = False) -> list[Path]:
    """Remove superseded stage folders (only ones with prefopt's marker); returns what was (or would be) removed."""
    folders = superseded_stage_folders(layout, keep)
    if not dry_run:
        for folder in folders:
            shutil.rmtree(folder)
    return folders


def clean_run(layout: RunLayout, stages: Sequence[Stage], dry_run: bool = False) -> list[Path]:
    """``prefopt clean`` for a staged recipe: under the run's lock, remove the stage folders that neither the run's
    index nor the configuration's own ``stages`` name."""
    if not layout.root.is_dir():
        raise PrefoptError(f"no run at `{layout.root}`: nothing to clean.")
    with run_directory_lock(layout):
        return clean_stage_folders(layout, planned_hashes(stages), dry_run=dry_run)


@contextlib.contextmanager
def run_directory_lock(layout: RunLayout) -> Iterator[None]:
    """Hold an exclusive lock on the run folder (main process only); a second run in the same folder stops at once
    with one sentence naming the process that holds it. The OS drops the lock when the holder dies, so a killed
    run never leaves the folder locked."""
    if not is_main():
        yield
        return
    import fcntl

    with open(layout.lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise PrefoptError(f"run directory `{layout.root}` is in use by {holder}; wait for it to finish or "
                               "choose another `run.name`.") from e
        handle.seek(0)
        handle.truncate()
        handle.write(f"prefopt process {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

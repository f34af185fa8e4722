"""Staged, resumable execution in a run directory.

Each stage records a hash of its configuration chained with the previous stage's hash, so changing a
stage's configuration reruns it and every stage after it; a finished stage with an unchanged hash is
skipped; an interrupted stage runs again and resumes from what it had written (generation and scoring
skip finished items, training resumes from its last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefopt.config import to_dict
from prefopt_recipes.magicid.distributed import barrier, is_main, main_first

STATE_FILE = "stages.json"


def config_hash(*parts: Any) -> str:
    blob = json.dumps([to_dict(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class StageRunner:
    """Runs named stages in order, skipping finished ones whose configuration has not changed."""

    def __init__(self, run_dir: Path, log: Callable[[str], None] = print):
        self.run_dir = run_dir
        self.log = log if is_main() else (lambda message: None)
        self.previous_hash = ""
        self.state: dict[str, dict] = self._load()

    def _load(self) -> dict:
        path = self.run_dir / STATE_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def _save(self) -> None:
        if not is_main():
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(self.state, indent=2))
        os.replace(tmp, self.run_dir / STATE_FILE)

    def stage_hash(self, config: Any) -> str:
        return config_hash(self.previous_hash, config)

    def run(self, name: str, config: Any, work: Callable[[str], str]) -> str:
        """Run ``work(stage_hash) -> one-line summary`` unless already done with this configuration."""
        digest = self.stage_hash(config)
        self.previous_hash = digest
        record = self.state.get(name, {})
        if record.get("hash") == digest and record.get("status") == "done":
            self.log(f"[dim]✓ {name}: done earlier ({record['seconds']:.1f} s) — {record['summary']}[/dim]")
            return digest
        if record.get("hash") not in (None, digest):
            self.log(f"[yellow]↻ {name}: configuration changed; rerunning it and every later stage[/yellow]")
            self._forget_from(name)
        with main_first() as main:
            if main:
                self._remove_stale_outputs(name, digest)
        started = time.perf_counter()
        self.state[name] = {"hash": digest, "status": "running", "started": time.time()}
        self._save()
        summary = work(digest)
        barrier()
        seconds = time.perf_counter() - started
        self.state[name] = {"hash": digest, "status": "done", "seconds": seconds, "summary": summary}
        self._save()
        self.log(f"[green]✓ {name}[/green] ({seconds:.1f} s): {summary}")
        return digest

    def _forget_from(self, name: str) -> None:
        names = list(self.state)
        for later in names[names.index(name):]:
            self.state.pop(later, None)
        self._save()

    def _remove_stale_outputs(self, name: str, digest: str) -> None:
        """Stage folders are named `<stage>-<hash>`; folders of an older configuration are deleted."""
        for folder in self.run_dir.glob(f"{name}-*"):
            if folder.is_dir() and folder.name != f"{name}-{digest}":
                shutil.rmtree(folder)

    def timings(self) -> dict[str, float]:
        return {name: record.get("seconds", 0.0) for name, record in self.state.items() if record.get("status") == "done"}

"""The run-local media repository: every video with its source, prompt, seed, files and reward scores.

Storage is parquet, append-only, one part file per append (written to a temporary name and renamed, so
a crash never leaves a torn file), so a user can read it with
``datasets.load_dataset("parquet", data_files="runs/x/repository/items/*.parquet")``.
Scores are kept per *reward key* (the reward's name, options and model identity), so re-scoring with the
same configuration skips what is done, and a changed configuration scores afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prefopt.errors import PrefoptError
from prefopt.files import write_parquet
from prefopt.interfaces import RewardScore, ScoredItems


@dataclass(frozen=True)
class MediaRecord:
    """One item of the repository. Paths are relative to the repository root."""

    id: str
    source: str  # "lora", "base", "static", or any label a recipe uses
    prompt: str
    media_path: str
    latent_path: str = ""
    seed: int = -1
    stage: str = ""
    extra: str = field(default="{}", metadata={"help": "JSON with anything else a recipe wants to keep."})


def reward_key(name: str, options: Any, provenance: dict) -> str:
    """Identity of a reward configuration: name + options + model identity."""
    blob = json.dumps({"name": name, "options": options, "provenance": provenance}, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


class MediaRepository:
    """Append-only parquet store of media records and their reward scores."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        (self.root / "items").mkdir(parents=True, exist_ok=True)
        (self.root / "scores").mkdir(parents=True, exist_ok=True)
        self._items: dict[str, MediaRecord] | None = None

    # --- items -------------------------------------------------------------------------------------

    def add(self, records: Sequence[MediaRecord]) -> None:
        """Append records; an id that already exists is an error (ids are unique)."""
        if not records:
            return
        existing = self.items_by_id()
        clashes = [r.id for r in records if r.id in existing]
        if clashes or len({r.id for r in records}) != len(records):
            raise PrefoptError(f"repository `{self.root}` already has item `{(clashes or [records[0].id])[0]}`.")
        self._write_part("items", [asdict(r) for r in records])
        existing.update({r.id: r for r in records})  # keep the cache: no re-read of every part per append
        self._items = dict(sorted(existing.items()))

    def refresh(self) -> None:
        """Forget cached items (another process may have appended)."""
        self._items = None

    def items_by_id(self) -> dict[str, MediaRecord]:
        """Every item, in id order: whatever order processes appended them in, the same config gives the same
        order (and so the same pairs and DPO batches)."""
        if self._items is None:
            rows = sorted(self._read_parts("items"), key=lambda row: row["id"])
            self._items = {row["id"]: MediaRecord(**row) for row in rows}
        return self._items

    def items(self, sources: Iterable[str] | None = None) -> list[MediaRecord]:
        wanted = set(sources) if sources is not None else None
        return [r for r in self.items_by_id().values() if wanted is None or r.source in wanted]

    def path(self, relative: str) -> Path:
        return self.root / relative

    def relative(self, path: Path) -> str:
        """A file's path as records keep it: relative to the repository, with `/`."""
        return Path(path).relative_to(self.root).as_posix()

    @property
    def media_dir(self) -> Path:
        """Where items' media files go (``media/<id>.mp4``, or ``.png`` for images)."""
        return self.root / "media"

    @property
    def latent_dir(self) -> Path:
        """Where generated items' latents go (``latents/<id>.safetensors``), trained on without a VAE round trip."""
        return self.root / "latents"

    # --- scores ------------------------------------------------------------------------------------

    def add_scores(self, key: str, reward: str, scores: dict[str, RewardScore], provenance: dict) -> None:
        """Append one reward configuration's scores for some items."""
        rows = [
            {"item_id": item_id, "reward_key": key, "reward": reward, "value": float(s.value), "raw": float(s.raw),
             "metadata": json.dumps(dict(s.metadata), default=str), "provenance": json.dumps(provenance, default=str)}
            for item_id, s in scores.items()
        ]
        if rows:
            self._write_part("scores", rows)

    def score_rows(self) -> list[dict]:
        """Every stored score: item_id, reward_key, reward, value, raw, metadata, provenance."""
        return self._read_parts("scores")

    def scored_ids(self, key: str) -> set[str]:
        return {row["item_id"] for row in self._read_parts("scores") if row["reward_key"] == key}

    def score_table(self, keys: dict[str, str], sources: Iterable[str] | None = None) -> ScoredItems:
        """Items scored by every reward in ``keys`` (reward name → reward key), as columns for selection."""
        by_key: dict[str, dict[str, float]] = {k: {} for k in keys.values()}
        for row in self._read_parts("scores"):
            if row["reward_key"] in by_key:
                by_key[row["reward_key"]][row["item_id"]] = row["value"]
        items = [r for r in self.items(sources) if all(r.id in by_key[k] for k in keys.values())]
        return ScoredItems(
            ids=np.array([r.id for r in items], dtype=object),
            sources=np.array([r.source for r in items], dtype=object),
            prompts=np.array([r.prompt for r in items], dtype=object),
            scores={name: np.array([by_key[k][r.id] for r in items], dtype=np.float64) for name, k in keys.items()},
        )

    def score_metadata(self, key: str) -> dict[str, dict]:
        return {row["item_id"]: json.loads(row["metadata"]) for row in self._read_parts("scores")
                if row["reward_key"] == key}

    # --- storage -----------------------------------------------------------------------------------

    def _write_part(self, table: str, rows: list[dict]) -> None:
        import pyarrow as pa

        directory = self.root / table
        # Time first, so parts read back in the order they were appended (a later score of an item wins);
        # the random suffix keeps names of processes appending at once distinct.
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        write_parquet(directory / name, pa.Table.from_pylist(rows))

    def _read_parts(self, table: str) -> list[dict]:
        import pyarrow.parquet as pq

        parts = sorted((self.root / table).glob("part-*.parquet"))
        rows: list[dict] = []
        for part in parts:
            try:
                rows.extend(pq.read_table(part).to_pylist())
            except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
                raise PrefoptError(f"repository part `{part}` cannot be read ({e}); it is corrupt: move it aside "
                                   "and re-run, which regenerates or rescores what it held.") from e
        return rows


def add_static_videos(
    repository: MediaRepository, photos: Sequence[str], *, num_frames: int, height: int, width: int,
    prompt: str, stage: str = "static",
) -> list[MediaRecord]:
    """The paper's V_id: each reference photo as a static video of ``num_frames`` identical frames.

    Each photo is scaled so it covers ``height × width`` (aspect ratio kept) and centre-cropped; nothing
    is padded. Items are named ``<stage>-<index>``: give a ``stage`` that changes with the photos' content
    and the video size (the recipe uses its stage hash). Photos already in the repository are skipped, so
    the step is re-runnable; returns the stage's records, old and new.
    """
    from prefopt.media import inflate_image, read_media, write_media

    existing = repository.items_by_id()
    records, new = [], []
    for index, photo in enumerate(photos):
        item_id = f"{stage}-{index:03d}"
        if item_id in existing:
            records.append(existing[item_id])
            continue
        frames = inflate_image(read_media(photo)[0], num_frames, height, width)
        path = write_media(repository.media_dir / f"{item_id}.mp4", frames)
        new.append(MediaRecord(id=item_id, source="static", prompt=prompt, media_path=repository.relative(path), stage=stage,
                               extra=json.dumps({"photo": str(photo)})))
    repository.add(new)
    return records + new

"""Preference data from files and datasets: (prompt, winner, loser) rows in the formats people have.

Understood layouts (column names overridable):

- prefopt / generic: ``prompt``, ``winner``, ``loser`` (optional ``weight``);
- trl: ``prompt``, ``chosen``, ``rejected``;
- Pick-a-Pic v2: ``caption``, ``jpg_0``, ``jpg_1``, ``label_0`` (1: the first image wins, 0: the second, 0.5: a tie).

Sources: a JSONL, CSV or parquet file; a folder holding one such file, or one sub-folder per pair with
``prompt.txt``, ``winner.*`` and ``loser.*``; a ``datasets`` dataset saved with ``save_to_disk``; or a
Hugging Face dataset id. Media may be paths (relative to the data file, or to ``media_root``), encoded bytes,
``{"bytes": ..., "path": ...}`` records (``datasets`` Image columns) or PIL images; in-memory media are written
once, content-addressed, to a media folder, so training reads files like any other.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefopt.data import PreferenceExample
from prefopt.errors import PrefoptError
from prefopt.files import write_bytes
from prefopt.hub import downloads_allowed
from prefopt.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # `owner/name`; anything else is a local path
# (prompt, winner, loser, label) column names tried in order when the config names none.
LAYOUTS = (("prompt", "winner", "loser", None), ("prompt", "chosen", "rejected", None),
           ("caption", "jpg_0", "jpg_1", "label_0"))


@dataclass
class PreferenceDataConfig:
    """Where preference pairs come from and how their columns read."""

    path: str = field(
        default="",
        metadata={"help": "A JSONL/CSV/parquet file; a folder with one such file or one sub-folder per pair "
                          "(`prompt.txt`, `winner.*`, `loser.*`); a `datasets` folder from `save_to_disk`; or a "
                          "Hugging Face dataset id."},
    )
    split: str = field(default="train", metadata={"help": "Dataset split (datasets and hub ids only)."})
    prompt_column: str | None = field(default=None, metadata={"help": "Prompt column; empty: `prompt` or `caption`."})
    winner_column: str | None = field(
        default=None, metadata={"help": "Preferred media column; empty: `winner`, `chosen`, or `jpg_0` with a label."})
    loser_column: str | None = field(
        default=None, metadata={"help": "Other media column; empty: `loser`, `rejected`, or `jpg_1` with a label."})
    label_column: str | None = field(
        default=None,
        metadata={"help": "Pick-a-Pic-style label: 1 means the winner column wins, 0 the loser column, 0.5 a tie; "
                          "empty: `label_0` when the columns are `jpg_0`/`jpg_1`, else none (winner always wins)."},
    )
    ties: Literal["drop", "both"] = field(
        default="drop",
        metadata={"help": "Tied pairs (label 0.5): `drop` them, or train `both` orders at weight `tie_weight`."},
    )
    tie_weight: float = field(default=0.5, metadata={"help": "Weight of each order of a tied pair (`ties: both`)."})
    media_root: str | None = field(
        default=None, metadata={"help": "Folder relative media paths start from; empty: the data file's folder."})
    allow_outside_paths: bool = field(
        default=False,
        metadata={"help": "Let media paths in the data lead outside the data folder (or `media_root`). Off, a path "
                          "that leaves it (`../…`, or an absolute path elsewhere) is refused, so pairs from someone "
                          "else cannot make prefopt read other files of yours."})
    max_pairs: int | None = field(default=None, metadata={"help": "Use only the first N pairs (after ties)."})

    def __post_init__(self) -> None:
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ValueError(f"`max_pairs` must be at least 1, got {self.max_pairs}")
        if self.tie_weight <= 0:
            raise ValueError(f"`tie_weight` must be positive, got {self.tie_weight}")


def missing_data(config: PreferenceDataConfig, what: str = "preference data", key: str = "data.path") -> str | None:
    """The sentence :func:`read_rows` would stop on for lack of the source (empty, a local path that is not there,
    a hub id without downloads), found without reading it (`prefopt validate`); None when it may be read."""
    try:
        _source_kind(config, what, key)
    except PrefoptError as e:
        return str(e)
    return None


def _source_kind(config: PreferenceDataConfig, what: str, key: str) -> str:
    if not config.path:
        raise PrefoptError(f"`{key}` is empty: give a {what} file, a folder or a dataset id, e.g. {key}=data.parquet")
    path = Path(config.path).expanduser()
    if path.is_file() or path.is_dir():
        return "file" if path.is_file() else "folder"
    if not HUB_ID.fullmatch(config.path) or path.suffix.lower() in DATA_SUFFIXES:
        raise PrefoptError(f"{what} `{config.path}` does not exist.")
    if not downloads_allowed():  # a mistyped local `data/pairs` must not become a connection to the hub
        raise PrefoptError(f"{what} `{config.path}` is not a file or folder here; to read the Hugging Face "
                           "dataset of that id, set `run.allow_downloads: true`.")
    return "hub"


def read_rows(config: PreferenceDataConfig, what: str = "preference data",
              key: str = "data.path") -> tuple[Iterable[dict[str, Any]], Path]:
    """The source's rows, and the folder relative media paths start from. ``config`` needs only ``path`` and
    ``split`` (a prompts dataset reads through here too); ``what`` names the data in messages."""
    kind = _source_kind(config, what, key)
    path = Path(config.path).expanduser()
    if kind == "file":
        return _read_table(path, what), path.parent
    if kind == "folder":
        return _read_folder(path, config.split, what)
    return _read_hub_dataset(config.path, config.split), Path.cwd()


def _read_table(path: Path, what: str = "preference data") -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if suffix == ".csv":
            with path.open(newline="") as f:
                return list(csv.DictReader(f))
        if suffix in (".jsonl", ".json"):
            text = path.read_text()
            if suffix == ".json" and text.lstrip().startswith("["):
                return json.loads(text)
            return _json_lines(text, path, what)
    except (OSError, ValueError) as e:
        raise PrefoptError(f"{what} `{path}` could not be read: {e}") from e
    raise PrefoptError(f"{what} `{path}` is not a {', '.join(DATA_SUFFIXES)} file.")


def _json_lines(text: str, path: Path, what: str = "preference data") -> list[Any]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise PrefoptError(f"{what} `{path}`, line {number}, is not valid JSON ({e}).") from e
    return rows


def _read_folder(path: Path, split: str, what: str = "preference data") -> tuple[list[dict[str, Any]], Path]:
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        import datasets

        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            dataset = _split(dataset, split, str(path))
        return list(dataset), path
    tables = sorted(p for p in path.iterdir() if p.suffix.lower() in DATA_SUFFIXES and p.is_file())
    if len(tables) == 1:
        return _read_table(tables[0], what), path
    if len(tables) > 1:
        raise PrefoptError(f"folder `{path}` holds several data files ({', '.join(p.name for p in tables)}); "
                           "point `data.path` at one of them.")
    rows = [_pair_folder_row(d) for d in sorted(path.iterdir()) if d.is_dir()]
    if not rows:
        raise PrefoptError(f"folder `{path}` holds no data file and no pair folders (`prompt.txt`, `winner.*`, "
                           "`loser.*`).")
    return rows, path


def _pair_folder_row(folder: Path) -> dict[str, Any]:
    def media(stem: str) -> str:
        found = [p for p in folder.glob(f"{stem}.*") if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
        if len(found) != 1:
            raise PrefoptError(f"pair folder `{folder}` needs exactly one `{stem}.*` image or video, found {len(found)}.")
        return str(found[0])

    prompt_file = folder / "prompt.txt"
    if not prompt_file.is_file():
        raise PrefoptError(f"pair folder `{folder}` has no `prompt.txt`.")
    return {"prompt": prompt_file.read_text().strip(), "winner": media("winner"), "loser": media("loser")}


def _read_hub_dataset(name: str, split: str) -> Iterable[dict[str, Any]]:
    """Rows of a hub dataset, streamed: a subset (`max_pairs`) of Pick-a-Pic v2 downloads only what it reads."""
    import datasets

    try:
        return iter(datasets.load_dataset(name, split=split, streaming=True))
    except (OSError, ValueError, ConnectionError) as e:  # offline, unknown id, gated, missing split
        raise PrefoptError(f"dataset `{name}` (split `{split}`) could not be loaded ({e}); give a local file or "
                           "folder, or check the id and your network and `hf auth login`.") from e


def _split(dataset, split: str, where: str):
    if split not in dataset:
        raise PrefoptError(f"dataset `{where}` has no split `{split}` (it has {', '.join(dataset)}); set `data.split`.")
    return dataset[split]


def resolve_columns(config: PreferenceDataConfig, columns: list[str]) -> tuple[str, str, str, str | None]:
    """(prompt, winner, loser, label) column names: the configured ones, else the first known layout present."""
    configured = (config.prompt_column, config.winner_column, config.loser_column)
    for prompt, winner, loser, label in LAYOUTS:
        names = tuple(c or default for c, default in zip(configured, (prompt, winner, loser)))
        if all(n in columns for n in names):
            label = config.label_column or (label if label in columns and names[1:] == ("jpg_0", "jpg_1") else None)
            if label is not None and label not in columns:
                raise PrefoptError(f"label column `{label}` is not in the data (columns: {', '.join(columns)}).")
            return (*names, label)
    raise PrefoptError(
        f"the preference data's columns ({', '.join(columns)}) match no known layout (prompt/winner/loser, "
        "trl's prompt/chosen/rejected, Pick-a-Pic's caption/jpg_0/jpg_1/label_0); name them with "
        "`data.prompt_column`, `data.winner_column` and `data.loser_column`."
    )


def to_examples(config: PreferenceDataConfig, rows: Iterable[dict[str, Any]], base: Path,
                media_dir: Path) -> tuple[list[PreferenceExample], list[int]]:
    """Preference examples (with the source row of each), ties handled as configured, in-memory media
    written to ``media_dir``. Rows are read only until ``max_pairs`` pairs are made (a streamed hub dataset
    is never read whole)."""
    rows = iter(rows)
    first_row = next(rows, None)
    if first_row is None:
        raise PrefoptError(f"preference data `{config.path}` holds no rows.")
    columns = resolve_columns(config, list(_record(first_row, 0)))
    root = Path(config.media_root).expanduser() if config.media_root else base
    examples, sources = [], []
    for index, row in enumerate(itertools.chain([first_row], rows)):
        if config.max_pairs is not None and len(examples) >= config.max_pairs:
            break
        for winner, loser, prompt, weight in _row_pairs(config, _record(row, index), index, columns, root, media_dir):
            examples.append(PreferenceExample(prompt=prompt, winner=winner, loser=loser, weight=weight))
            sources.append(index)
    if config.max_pairs is not None:
        examples, sources = examples[: config.max_pairs], sources[: config.max_pairs]
    if not examples:
        raise PrefoptError(f"preference data `{config.path}` has no pairs left after dropping ties.")
    return examples, sources


def _record(row: Any, index: int) -> dict[str, Any]:
    """A row as named cells; anything else (a list, a number, a CSV line with more cells than the header) is one
    sentence naming the row."""
    if not isinstance(row, dict):
        raise PrefoptError(f"row {index}: expected named columns (an object or a table row), got {type(row).__name__} "
                           f"`{str(row)[:80]}`.")
    if None in row or not all(isinstance(k, str) for k in row):
        raise PrefoptError(f"row {index}: has cells without a column name (more cells than the header has columns).")
    return row


def _row_pairs(config: PreferenceDataConfig, row: dict[str, Any], index: int, columns, root: Path, media_dir: Path):
    """The (winner, loser, prompt, weight) pairs of one row: none for a dropped tie, two for a kept one."""
    prompt_col, winner_col, loser_col, label_col = columns
    # An empty prompt is a valid (unconditional) example; an empty media or label cell is not.
    missing = [c for c in (prompt_col, winner_col, loser_col, label_col)
               if c is not None and (row.get(c) is None or (c != prompt_col and row.get(c) == ""))]
    if missing:
        raise PrefoptError(f"row {index}: column `{missing[0]}` is empty or missing.")
    first, second = (_media_file(row[c], root, media_dir, index, c, config.allow_outside_paths)
                     for c in (winner_col, loser_col))
    label = 1.0 if label_col is None else _number(row[label_col], index, label_col)
    weight = 1.0 if row.get("weight") in (None, "") else _number(row["weight"], index, "weight")
    if weight <= 0:
        raise PrefoptError(f"row {index}: weight {weight:g} must be positive (drop the row instead).")
    if not isinstance(row[prompt_col], (str, int, float)) or isinstance(row[prompt_col], bool):
        raise PrefoptError(f"row {index}: the prompt in column `{prompt_col}` is {type(row[prompt_col]).__name__}, "
                           "not text.")
    prompt = str(row[prompt_col])
    if label == 0.5:
        tie = config.tie_weight
        return [] if config.ties == "drop" else [(first, second, prompt, tie), (second, first, prompt, tie)]
    if label not in (0.0, 1.0):
        raise PrefoptError(f"row {index}: label `{row[label_col]}` in column `{label_col}` must be 1, 0 or 0.5.")
    return [(first, second, prompt, weight) if label == 1.0 else (second, first, prompt, weight)]


def _number(value: Any, index: int, column: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PrefoptError(f"row {index}: `{value}` in column `{column}` is not a number.") from None
    if not math.isfinite(number):
        raise PrefoptError(f"row {index}: `{value}` in column `{column}` must be a finite number.")
    return number


def _media_file(value: Any, root: Path, media_dir: Path, row: int, column: str, outside: bool = False) -> str:
    """A media file path for a cell: a path (relative to ``root``, which it may not leave unless ``outside``), or
    in-memory media written once."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        value = data if data is not None else path
    if isinstance(value, (str, os.PathLike)):
        # Lexically, `..` and all: a link the user put inside their data folder is theirs to follow.
        path = Path(os.path.normpath(root.absolute() / Path(value).expanduser()))
        if not outside and not path.is_relative_to(Path(os.path.normpath(root.absolute()))):
            raise PrefoptError(f"row {row}, column `{column}`: media path `{value}` leads outside the data folder "
                               f"`{root}`; set `data.media_root` to a folder that holds it, or "
                               "`data.allow_outside_paths: true`.")
        return str(path.resolve())
    if isinstance(value, (bytes, bytearray)):
        return str(_write_bytes(bytes(value), media_dir))
    if hasattr(value, "save"):  # a PIL image (a decoded `datasets` Image column)
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return str(_write_bytes(buffer.getvalue(), media_dir, ".png"))
    raise PrefoptError(f"row {row}, column `{column}`: expected a media path, bytes or an image, got "
                       f"{type(value).__name__}.")


def _write_bytes(data: bytes, media_dir: Path, suffix: str | None = None) -> Path:
    # Absolute, so pairs files written from these examples read back from any working directory.
    target = media_dir.resolve() / f"{hashlib.sha256(data).hexdigest()[:32]}{suffix or _sniff_suffix(data)}"
    if not target.is_file():
        write_bytes(target, data)  # its temporary name is per process: processes may write the same file at once
    return target


def _sniff_suffix(data: bytes) -> str:
    """The file type of encoded media from its first bytes (images people store in datasets, or mp4/webm)."""
    signatures = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"GIF8": ".gif", b"\x1aE\xdf\xa3": ".webm"}
    for magic, suffix in signatures.items():
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[4:8] == b"ftyp":
        return ".mp4"
    return ".bin"


def check_media(examples: list[PreferenceExample], sources: list[int]) -> None:
    """Open every media file once; a missing or unreadable one is one sentence naming the file and its row."""
    from prefopt.media import read_media

    seen: set[str] = set()
    for example, row in zip(examples, sources):
        for role, media in (("winner", example.winner), ("loser", example.loser)):
            if media in seen:
                continue
            seen.add(media)
            try:
                read_media(media)
            except PrefoptError as e:
                raise PrefoptError(f"row {row} ({role}): {e}") from e

"""Writing files so that a file under its final name is always whole.

Every file prefopt writes goes through :func:`write_file`: the content is written under a temporary name in the
same folder (``.<stem>.<pid>.tmp<suffix>``: the suffix is kept because writers pick the format by it), flushed to
the disk, checked, and only then renamed over the final name, which is one atomic step on POSIX file systems. A
crash, a kill or a full disk leaves at most a temporary file, which nothing reads (listings skip names that start
with a dot) and the next run removes (:func:`remove_temporaries`), never a torn file under the final name. The one
exception is the trainer's metrics log, which is appended to line by line; :func:`read_jsonl` reads it whatever its
last line holds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefopt.errors import PrefoptError

logger = logging.getLogger(__name__)

TEMPORARY_MARK = ".tmp"


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed: hidden, in the same folder, unique per process."""
    return path.with_name(f".{path.stem}.{os.getpid()}{TEMPORARY_MARK}{path.suffix}")


def is_temporary(path: str | os.PathLike) -> bool:
    """True for a temporary name of :func:`temporary_path`, a folder being written (``….tmp/``, as checkpoints
    are) or anything inside one."""
    parts = Path(path).parts
    return any(part.endswith(TEMPORARY_MARK) for part in parts) or (
        parts[-1].startswith(".") and TEMPORARY_MARK in parts[-1])


def write_file(path: str | os.PathLike, write: Callable[[Path], None],
               check: Callable[[Path], None] | None = None, durable: bool = True) -> Path:
    """Write ``path`` whole or not at all: ``write(tmp)``, flush it to the disk (unless not ``durable``: a cache
    entry that is made again when lost), ``check(tmp)`` (raise if it is not what was meant to be written), then
    rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with full_disk_named(path):
            write(tmp)
            if durable:
                _flush_to_disk(tmp)
            if check is not None:
                check(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


@contextlib.contextmanager
def full_disk_named(path: str | os.PathLike) -> Iterator[None]:
    """Make a full disk while writing ``path`` an ``ENOSPC`` error naming it, whatever the writer raised: torch says
    ``unexpected pos``, safetensors ``os error 28``, a Python write names no file. The CLI then prints one sentence.
    Other errors pass unchanged."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT) and not e.filename:
            raise OSError(e.errno, e.strerror, str(path)) from e
        if e.errno in (errno.ENOSPC, errno.EDQUOT) or not _disk_full(e, path):
            raise
        raise disk_full_error(path, f"{type(e).__name__}: {e}") from e
    except Exception as e:
        if not _disk_full(e, path):
            raise
        raise disk_full_error(path, f"{type(e).__name__}: {e}") from e


def _disk_full(error: BaseException, path: str | os.PathLike, margin: int = 1 << 20) -> bool:
    """Did ``error`` come from a full disk? Its words say so, or the folder has (almost) no space left."""
    if "No space left on device" in str(error) or "os error 28" in str(error):
        return True
    try:
        return shutil.disk_usage(Path(path).parent).free < margin
    except OSError:
        return False


def write_folder(path: str | os.PathLike, write: Callable[[Path], None],
                 check: Callable[[Path], None] | None = None, replaces: str | None = None) -> Path:
    """A folder written whole (``save_pretrained``, a LoRA folder): ``write(tmp)`` fills a temporary folder beside
    it, ``check(tmp)``, then it takes the final name. An earlier folder of that name is replaced only when it is
    empty or holds ``replaces`` (the file that marks what prefopt writes there): anything else is the user's, and is
    one sentence, never deleted. The earlier folder is moved aside first and deleted after; a crash between the two
    renames leaves no folder under the final name (a later run writes it again), never a mix of two."""
    path = Path(path)
    if path.exists() and not _replaceable(path, replaces):
        raise PrefoptError(f"`{path}` already exists and is not a folder prefopt wrote (it has no `{replaces}`); "
                           "move it, or choose another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_MARK}")
    old = path.with_name(f".{path.name}.{os.getpid()}.old{TEMPORARY_MARK}")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        with full_disk_named(path):
            write(tmp)
            flush_folder(tmp)
            if check is not None:
                check(tmp)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return path


def _replaceable(path: Path, replaces: str | None) -> bool:
    return path.is_dir() and not path.is_symlink() and (
        not any(path.iterdir()) or (replaces is not None and (path / replaces).is_file()))


def flush_folder(folder: Path) -> None:
    """fsync every file of a folder about to be renamed into place."""
    for file in (f for f in folder.rglob("*") if f.is_file()):
        _flush_to_disk(file)


def remove_temporaries(root: Path) -> list[Path]:
    """Delete what killed writers left under ``root`` (files and folders with temporary names): a SIGKILL or an
    out-of-memory kill skips the cleanup of :func:`write_file`. Call it only while no other process writes there
    (under the run's lock, before any work)."""
    removed = []
    for found in sorted(root.rglob(f"*{TEMPORARY_MARK}*"), key=lambda p: len(p.parts)):
        if not is_temporary(found) or not os.path.lexists(found) or any(p in removed for p in found.parents):
            continue
        if found.is_dir() and not found.is_symlink():
            shutil.rmtree(found, ignore_errors=True)
        else:
            found.unlink(missing_ok=True)
        removed.append(found)
    return removed


def _flush_to_disk(path: Path) -> None:
    """fsync, so that a power cut after the rename cannot leave an empty file under the final name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def check(tmp: Path) -> None:
        if tmp.stat().st_size != len(data):
            raise disk_full_error(path, f"{tmp.stat().st_size} of {len(data)} bytes were written")

    return write_file(path, lambda tmp: tmp.write_bytes(data), check)


def copy_file(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    size = os.stat(source).st_size

    def check(tmp: Path) -> None:
        if tmp.stat().st_size != size:
            raise disk_full_error(path, f"{tmp.stat().st_size} of {size} bytes were copied")

    return write_file(path, lambda tmp: shutil.copyfile(source, tmp), check)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """JSON, indented; checked by parsing it back."""
    text = json.dumps(data, indent=2)

    def check(tmp: Path) -> None:
        json.loads(tmp.read_text())

    return write_file(path, lambda tmp: tmp.write_text(text), check)


def write_parquet(path: str | os.PathLike, table: Any) -> Path:
    """A pyarrow table as parquet; checked by reading its footer back."""
    import pyarrow.parquet as pq

    def check(tmp: Path) -> None:
        if pq.read_metadata(tmp).num_rows != table.num_rows:
            raise disk_full_error(path, "the parquet file read back with fewer rows")

    return write_file(path, lambda tmp: pq.write_table(table, tmp), check)


def disk_full_error(path: str | os.PathLike, detail: str) -> OSError:
    """The error a full disk gives, for writers that report it only in words (ffmpeg) or by writing less."""
    return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({detail})", str(path))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON-lines file that is appended to (the metrics log). A line a crash tore (the last one, as
    a rule) is skipped with a warning naming the file, so the log stays readable and a run resumes."""
    path = Path(path)
    if not path.is_file():
        return []
    rows, torn = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            torn += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            torn += 1
    if torn:
        logger.warning("%d torn line(s) in `%s` were skipped (written when a run was killed).", torn, path)
    return rows


def read_json(path: str | os.PathLike, what: str) -> Any:
    """A JSON file prefopt wrote; a missing, torn or edited one is one sentence naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise PrefoptError(f"{what} `{path}` cannot be read ({e}).") from e


def read_lines(path: str | os.PathLike, what: str) -> list[str]:
    """The non-empty lines of a text file the user gave (prompts), stripped; one sentence when it is missing, a
    folder, or not UTF-8 text."""
    path = Path(path)
    if not path.is_file():
        raise PrefoptError(f"{what} `{path}` {'is a folder, not a file' if path.is_dir() else 'does not exist'}.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PrefoptError(f"{what} `{path}` is not UTF-8 text (byte {e.start}); save it as UTF-8, one line each.") from e
    return [line.strip() for line in text.splitlines() if line.strip()]

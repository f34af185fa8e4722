"""Training checkpoints: LoRA, optimizer, scheduler and RNG state, written atomically, read without pickles.

A checkpoint is a directory ``checkpoints/step-000120/``; it is written under a temporary name and
renamed when complete, so a crash mid-write never leaves a checkpoint that looks valid. Nothing in it can
run code when read back: tensors are safetensors, the RNG state is safetensors + JSON, and the optimizer
and scheduler state dicts are read with ``torch.load(weights_only=True)``, which refuses any pickle that
names a callable. A checkpoint that cannot be read (truncated, corrupt, crafted) is named in a warning and
the next older one is used.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prefopt.data import load_tensors, save_tensors
from prefopt.errors import PrefoptError
from prefopt.files import flush_folder, full_disk_named

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
RNG_TENSORS, RNG_JSON = "rng.safetensors", "rng.json"


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:06d}"


def save_checkpoint(
    root: Path, step: int, loras: dict[str, dict[str, torch.Tensor]], optimizer: Any, scheduler: Any, extra: dict
) -> Path:
    """Write ``checkpoints/step-N/`` with one ``lora-<adapter>.safetensors`` per adapter."""
    final = checkpoint_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with full_disk_named(tmp):
            _write_checkpoint(tmp, step, loras, optimizer, scheduler, extra)
            flush_folder(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk keeps no half checkpoint, and frees its space
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def _write_checkpoint(folder: Path, step: int, loras: dict[str, dict[str, torch.Tensor]], optimizer: Any,
                      scheduler: Any, extra: dict) -> None:
    for adapter, weights in loras.items():
        save_tensors(folder / f"lora-{adapter}.safetensors", weights)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    tensors, plain = _rng_state()
    save_tensors(folder / RNG_TENSORS, tensors)
    (folder / RNG_JSON).write_text(json.dumps(plain))
    (folder / STATE_FILE).write_text(json.dumps({"step": step, **extra}, indent=2))


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories are ignored)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and p.name[len("step-"):].isdigit()
                  and (p / STATE_FILE).is_file())


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint."""
    done = complete_checkpoints(root)
    return done[-1] if done else None


@dataclass
class Checkpoint:
    """Everything a checkpoint holds, read and checked before any of it is applied."""

    path: Path
    loras: dict[str, dict[str, torch.Tensor]]
    optimizer: dict
    scheduler: dict
    rng: tuple[dict[str, torch.Tensor], dict]
    state: dict


def _torch_state(path: Path) -> dict:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # the restricted unpickler fails on torn bytes with any error type (IndexError, …)
        raise PrefoptError(f"checkpoint file `{path}` cannot be read safely ({type(e).__name__}); it is truncated, "
                           "corrupt, or holds code.") from e


def read_checkpoint(path: Path) -> Checkpoint:
    """Read one checkpoint whole; any unreadable file is a PrefoptError naming it."""
    loras = {f.stem.removeprefix("lora-"): load_tensors(f, "checkpoint file") for f in sorted(path.glob("lora-*.safetensors"))}
    if not loras:
        raise PrefoptError(f"checkpoint `{path}` holds no LoRA file.")
    try:
        state = json.loads((path / STATE_FILE).read_text())
        plain = json.loads((path / RNG_JSON).read_text())
    except (OSError, ValueError) as e:
        raise PrefoptError(f"checkpoint `{path}` has an unreadable state file ({e}).") from e
    return Checkpoint(path, loras, _torch_state(path / "optimizer.pt"), _torch_state(path / "scheduler.pt"),
                      (load_tensors(path / RNG_TENSORS, "checkpoint file"), plain), state)


def newest_readable_checkpoint(root: Path, set_aside: bool = False) -> Checkpoint | None:
    """The newest checkpoint that reads back whole; broken newer ones are named in a warning and skipped, and with
    ``set_aside`` (the main process) renamed to ``step-N.broken``, so that pruning never counts them as kept
    checkpoints and no later message calls them good."""
    for path in reversed(complete_checkpoints(root)):
        try:
            return read_checkpoint(path)
        except PrefoptError as e:
            aside = path.with_name(path.name + ".broken")
            logger.warning("%s Falling back to the previous checkpoint%s.", e,
                           f"; it is kept as `{aside}`" if set_aside else "")
            if set_aside:
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(path, aside)
    return None


def apply_checkpoint(checkpoint: Checkpoint, optimizer: Any, scheduler: Any) -> None:
    """Restore optimizer, scheduler and RNG state from a checkpoint that was read whole."""
    optimizer.load_state_dict(checkpoint.optimizer)
    scheduler.load_state_dict(checkpoint.scheduler)
    _set_rng_state(*checkpoint.rng)


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    done = complete_checkpoints(root)
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Every generator's state as tensors (torch, CUDA) and JSON (Python, NumPy)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    plain = {"python": [version, list(internal), gauss],
             "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)]}
    return tensors, plain


def _set_rng_state(tensors: dict[str, torch.Tensor], plain: dict) -> None:
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)

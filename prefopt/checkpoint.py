"""Training checkpoints: LoRA, optimizer, scheduler and RNG state, written atomically.

A checkpoint is a directory ``checkpoints/step-000120/``; it is written under a temporary name and
renamed when complete, so a crash mid-write never leaves a checkpoint that looks valid.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from prefopt.data import save_tensors

STATE_FILE = "trainer_state.json"


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
    for adapter, weights in loras.items():
        save_tensors(tmp / f"lora-{adapter}.safetensors", weights)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(_rng_state(), tmp / "rng.pt")
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, **extra}, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint (temporary directories are ignored)."""
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
                  and (p / STATE_FILE).is_file())
    return done[-1] if done else None


def load_checkpoint(path: Path, optimizer: Any, scheduler: Any) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """Restore optimizer, scheduler and RNG state; return the LoRA weights by adapter and the trainer state."""
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    _set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    loras = {f.stem.removeprefix("lora-"): load_file(str(f)) for f in sorted(path.glob("lora-*.safetensors"))}
    return loras, json.loads((path / STATE_FILE).read_text())


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

"""Where a run's files live: every path prefopt writes is named here, once.

A run folder is ``<run.output_dir>/<run.name>/``::

    stages.json                the index: each stage's hash and status, for the configuration that ran last
    config.json                the last configuration whose every stage finished
    .prefopt.lock              held while a process works in the folder
    repository/                media, latents and reward scores the stages share (prefopt.repository)
    report/index.html          the report, with its pictures beside it
    <stage>-<hash>/            one folder per stage and configuration (a StageFolder):
        .prefopt-stage.json    its marker: stage, hash, status, seconds, summary
        config.json            the configuration that made it
        pairs.parquet, pairs.png, pairs-empty.png     a selection: its pairs and their picture
        pairs.jsonl                                    preference data as trained (the DPO recipe)
        prompts.json, table.json, table.md             prompts; an evaluation's table
        lora/, checkpoints/, metrics.jsonl, cache/     a training (what DiffusionDPOTrainer writes)

Studies and reports find results through :meth:`RunLayout.current`, never by rebuilding a folder name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from prefopt.errors import PrefoptError

#: The file diffusers' ``save_lora_weights`` writes and ``load_lora_weights`` reads in a LoRA folder.
LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
#: Beside it, the same LoRA with peft's key names, which ``init_adapter`` continues from.
ADAPTER_NAME = "adapter.safetensors"


@dataclass(frozen=True)
class StageFolder:
    """One stage's folder (also a trainer's output folder): the files it may hold."""

    path: Path

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def stage(self) -> str:
        """The stage the folder belongs to (``<stage>-<hash>``)."""
        return self.path.name.rsplit("-", 1)[0]

    @property
    def digest(self) -> str:
        """The stage hash the folder is named by (``<stage>-<hash>``)."""
        return self.path.name.rsplit("-", 1)[-1]

    # the stage's own records
    @property
    def marker(self) -> Path:
        return self.path / ".prefopt-stage.json"

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    # a selection
    @property
    def pairs(self) -> Path:
        return self.path / "pairs.parquet"

    @property
    def pairs_plot(self) -> Path:
        return self.path / "pairs.png"

    @property
    def empty_pairs_plot(self) -> Path:
        """The picture of a selection that chose nothing: it never replaces an earlier selection's files."""
        return self.path / "pairs-empty.png"

    @property
    def pairs_jsonl(self) -> Path:
        """Preference data as trained, one JSON row per pair with its source row (the DPO recipe)."""
        return self.path / "pairs.jsonl"

    # prompts and evaluation
    @property
    def prompts(self) -> Path:
        return self.path / "prompts.json"

    @property
    def table(self) -> Path:
        return self.path / "table.json"

    @property
    def table_markdown(self) -> Path:
        return self.path / "table.md"

    def samples(self, model: str) -> Path:
        """The folder of one model's evaluation samples."""
        return self.path / model

    # a training
    @property
    def lora_dir(self) -> Path:
        """The final LoRA in diffusers format (``pipe.load_lora_weights`` takes the folder)."""
        return self.path / "lora"

    @property
    def lora(self) -> Path:
        return self.lora_dir / LORA_WEIGHTS_NAME

    @property
    def adapter(self) -> Path:
        """The same LoRA with peft's key names, which ``init_adapter`` continues from."""
        return self.lora_dir / ADAPTER_NAME

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics(self) -> Path:
        """One JSON line per logged training step (appended; torn lines are skipped when read)."""
        return self.path / "metrics.jsonl"

    @property
    def cache(self) -> Path:
        """Encoded media and prompts (the trainer's encode-once cache)."""
        return self.path / "cache"

    # online RL: each epoch's rollouts
    def rollouts(self, epoch: int) -> Path:
        """An epoch's rollouts: prompt, seed, every reward and the advantage of each sample (JSON)."""
        return self.path / "rollouts" / f"epoch-{epoch:04d}.json"

    def rollout_strip(self, epoch: int) -> Path:
        """The first group of an epoch's rollouts side by side (middle frames)."""
        return self.path / "rollouts" / f"epoch-{epoch:04d}.png"


def sample_name(index: int) -> str:
    """The file stem of a model's index-th evaluation sample (prompt-major, then seed) in its folder."""
    return f"{index:03d}"


def find_sample(folder: Path, index: int) -> Path | None:
    """A model's index-th sample in its folder, whatever its format (``.mp4`` for videos, ``.png`` for images)."""
    return next((p for p in sorted(Path(folder).glob(f"{sample_name(index)}.*")) if not p.name.startswith(".")), None)


@dataclass(frozen=True)
class RunLayout:
    """A run folder and every path in it."""

    root: Path

    @classmethod
    def of(cls, run_config) -> RunLayout:
        """The folder of a recipe's ``run`` options (``output_dir`` and ``name``)."""
        return cls(Path(run_config.output_dir) / run_config.name)

    @property
    def index(self) -> Path:
        return self.root / "stages.json"

    @property
    def config(self) -> Path:
        """The last configuration whose every stage finished."""
        return self.root / "config.json"

    @property
    def lock(self) -> Path:
        return self.root / ".prefopt.lock"

    @property
    def repository(self) -> Path:
        return self.root / "repository"

    @property
    def media(self) -> Path:
        """Media that came as bytes in preference data, written once by content."""
        return self.root / "media"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def report(self) -> Path:
        return self.report_dir / "index.html"

    @property
    def rewards_summary(self) -> Path:
        """Every reward's mean over each stage's samples (the reward-DPO loop)."""
        return self.root / "rewards.json"

    def stage(self, name: str, digest: str) -> StageFolder:
        return StageFolder(self.root / f"{name}-{digest}")

    def current(self, name: str) -> StageFolder:
        """The folder of stage ``name`` of the configuration that ran last (from the index)."""
        try:
            record = json.loads(self.index.read_text())[name]
        except (OSError, ValueError, KeyError) as e:
            raise PrefoptError(f"`{self.index}` names no stage `{name}`; run the recipe first.") from e
        return self.stage(name, record["hash"])

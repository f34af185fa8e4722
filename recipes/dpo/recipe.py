"""Offline Diffusion-DPO: preference pairs from a file, folder or dataset → LoRA → optional evaluation → report.

The recipe is its config and three stages, in ``<output_dir>/<name>/``:

1. ``pairs``: the pairs as trained (``pairs.jsonl``, each with its source row); its hash covers the data options,
   the pairs and each media file's size and modification time, so edited data trains anew;
2. ``train``: Diffusion-DPO of a LoRA (``lora/``, in diffusers format; checkpoints, metrics);
3. ``evaluation`` (when prompts are given): the base and the trained model sampled on the same prompts and seeds,
   scored with every named reward (``table.json``).

Media that came as bytes are written once, by content, to ``media/``; the report is ``report/index.html``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from prefopt.data import PreferenceExample
from prefopt.distributed import main_first
from prefopt.errors import PrefoptError
from prefopt.files import read_json, read_lines, write_json, write_text
from prefopt.layout import StageFolder, sample_name
from prefopt.lora_trainer import continues_when_longer
from prefopt.media import read_media
from prefopt.plugins import get_registry
from prefopt.preferences import check_media, read_rows, to_examples
from prefopt.progress import progress_bar
from prefopt.recipe import StagedRecipe
from prefopt.sampling import SampleJob, Sampling, sample_files
from prefopt.stages import RunResult, Stage
from prefopt.trainer import DiffusionDPOTrainer, media_size
from prefopt_recipes.common.sampling import trained_lora
from prefopt_recipes.common.scoring import load_rewards, score_in_memory
from prefopt_recipes.dpo.config import DPORecipeConfig

MODELS = ("base", "trained")  # the evaluation's two models, in its table's order


class DPORecipe(StagedRecipe):
    """Offline Diffusion-DPO on your own preference pairs (Pick-a-Pic, trl or prompt/winner/loser columns)."""

    name = "dpo"
    Config = DPORecipeConfig

    def __init__(self, config: DPORecipeConfig):
        super().__init__(config)
        self._examples: tuple[list[PreferenceExample], list[int]] | None = None

    def stages(self) -> list[Stage]:
        c = self.config
        stages = [Stage("pairs", [c.data, self.data_fingerprint()], self.write_pairs, read_trained_pairs),
                  Stage("train", [c.backbone, c.trainer], self.train, trained_lora, inputs=("pairs",),
                        length=continues_when_longer(c.trainer, "max_steps"))]
        if self.evaluation_prompts():
            stages.append(Stage("evaluation", [c.evaluation], self.evaluate, evaluation_table, inputs=("train",)))
        return stages

    def components(self):
        return [self.config.backbone, *self.config.evaluation.rewards.values()]

    # --- before any model loads -----------------------------------------------------------------------

    def missing_inputs(self) -> list[str]:
        """The preference data's source (found without reading it) and the evaluation prompts file."""
        from prefopt.preferences import missing_data

        c = self.config
        missing = [message for message in (missing_data(c.data),) if message]
        if c.evaluation.prompts_file and not Path(c.evaluation.prompts_file).is_file():
            missing.append(f"evaluation prompts file `{c.evaluation.prompts_file}` does not exist.")
        return missing

    def check_inputs(self) -> None:
        """Read the data and open every media file, so a bad row stops the run before a model loads."""
        examples, sources = self.examples()
        with progress_bar("checking media", 1) as bar:
            check_media(examples, sources)
            bar.advance()
        self.evaluation_prompts()

    def examples(self) -> tuple[list[PreferenceExample], list[int]]:
        """(examples, source rows), read once; in-memory media are written to ``media/``."""
        if self._examples is None:
            rows, base = read_rows(self.config.data)
            self._examples = to_examples(self.config.data, rows, base, self.layout.media)
        return self._examples

    def data_fingerprint(self) -> list:
        """The pairs and each media file's size and modification time: edited data trains anew instead of resuming
        the old run's checkpoints."""
        examples, _ = self.examples()
        pairs = [(e.prompt, e.winner, e.loser, e.weight) for e in examples]
        media = sorted({e.winner for e in examples} | {e.loser for e in examples})
        return [pairs, [(m, os.stat(m).st_size, os.stat(m).st_mtime_ns) for m in media]]

    def evaluation_prompts(self) -> tuple[str, ...]:
        e = self.config.evaluation
        return (*e.prompts, *(read_lines(e.prompts_file, "evaluation prompts file") if e.prompts_file else ()))

    # --- the stages -----------------------------------------------------------------------------------

    def write_pairs(self, folder: StageFolder) -> str:
        examples, sources = self.examples()
        here = folder.pairs_jsonl.parent
        rows = [{"row": row, "prompt": e.prompt, "winner": self._as_stored(e.winner, here),
                 "loser": self._as_stored(e.loser, here), "weight": e.weight} for e, row in zip(examples, sources)]
        with main_first() as main:
            if main:
                write_text(folder.pairs_jsonl, "".join(json.dumps(r) + "\n" for r in rows))
        return f"{len(rows)} pairs from `{self.config.data.path}`"

    def _as_stored(self, media: str, here: Path) -> str:
        """A media path in pairs.jsonl: relative to the file when the media lie inside the run (images a data file
        held as bytes, written to `media/`), as `data.path` files are read, so the run folder reads whole wherever
        it is copied; absolute otherwise, so the data may stay where it is."""
        inside = Path(os.path.abspath(media)).is_relative_to(os.path.abspath(self.layout.root))
        return os.path.relpath(media, here) if inside else os.path.abspath(media)

    def train(self, folder: StageFolder, pairs: list[PreferenceExample]) -> str:
        DiffusionDPOTrainer(self.backbone(), self.config.trainer, folder.path).train(pairs)
        return f"DPO {self.config.trainer.max_steps} steps on {len(pairs)} pairs"

    def evaluate(self, folder: StageFolder, train: Path) -> str:
        """Sample the base and the trained model on every (prompt, seed) and score both with every named reward:
        small, so once, on the main process."""
        with main_first() as main:
            if main:
                self.sample_and_score(folder, train)
        table = evaluation_table(folder)
        return "; ".join(f"{row['model']}: " + ", ".join(f"{k} {row[k]:.2f}" for k in self.config.evaluation.rewards)
                         for row in table)

    def sample_and_score(self, folder: StageFolder, train: Path) -> None:
        e, backbone = self.config.evaluation, self.backbone()
        frames, height, width = media_size(backbone, self.config.trainer)
        sampling = Sampling.of(e, num_frames=e.num_frames or frames, height=e.height or height,
                               width=e.width or width)
        pairs = [(p, s) for p in self.evaluation_prompts() for s in range(e.seeds_per_prompt)]
        jobs = [SampleJob(sample_name(i), prompt, seed) for i, (prompt, seed) in enumerate(pairs)]
        rewards, rows = load_rewards(e.rewards), []
        # `trainer.init_lora` under both: the base model is the reference the LoRA was trained against.
        initial = [Path(self.config.trainer.init_lora)] if self.config.trainer.init_lora else []
        for model, loras in zip(MODELS, (initial, [*initial, train])):
            backbone.use_loras(loras)
            paths = sample_files(backbone, jobs, sampling, folder.samples(model), description=f"sampling ({model})")
            samples = [(job.prompt, read_media(path)) for job, path in zip(jobs, paths)]
            scores = score_in_memory(rewards, samples, description=f"scoring ({model})")
            rows.append({"model": model, "samples": len(samples),
                         **{name: float(np.mean([s.value for s in values])) for name, values in scores.items()}})
        write_json(folder.table, rows)

    def backbone(self):
        spec = self.config.backbone
        return get_registry().create("backbones", spec.name, spec.options)

    def write_report(self, result: RunResult) -> Path:
        from prefopt_recipes.dpo.report import write_report

        return write_report(result, self.config, self.examples(), self.evaluation_prompts())


# --- what each stage delivers (read back from its folder, which is how it is verified) --------------------


def read_trained_pairs(folder: StageFolder) -> list[PreferenceExample]:
    try:
        rows = [json.loads(line) for line in folder.pairs_jsonl.read_text().splitlines() if line.strip()]
        here = folder.pairs_jsonl.parent
        examples = [PreferenceExample(r["prompt"], os.path.normpath(here / r["winner"]),
                                      os.path.normpath(here / r["loser"]), float(r["weight"])) for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PrefoptError(f"the pairs file `{folder.pairs_jsonl}` cannot be read ({e!r}).") from e
    missing = next((m for e in examples for m in (e.winner, e.loser) if not Path(m).is_file()), None)
    if missing:
        raise PrefoptError(f"media file `{missing}` of the pairs in `{folder.pairs_jsonl}` is gone.")
    return examples


def evaluation_table(folder: StageFolder, **inputs) -> list[dict]:
    table = read_json(folder.table, "the evaluation table")
    if not isinstance(table, list) or [row.get("model") if isinstance(row, dict) else None for row in table] != list(MODELS):
        raise PrefoptError(f"the evaluation table `{folder.table}` does not hold the base and the trained model.")
    return table

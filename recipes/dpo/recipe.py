"""Offline Diffusion-DPO: preference pairs from a file, folder or dataset → LoRA → optional evaluation → report.

Run folder ``<output_dir>/<name>/``: ``media/`` (media that came as bytes), ``train-<hash>/`` (``pairs.jsonl``, the
pairs as trained with their source rows, the ``config.json`` that made it, the trainer's cache, checkpoints, metrics
and ``lora/``),
``evaluation-<hash>/`` (samples and ``table.json``), ``report/index.html`` and ``config.json`` (the last configuration
that finished). The hashes cover the options
each part depends on, so a changed config trains into a new folder and never overwrites finished work.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from prefopt.config import to_dict
from prefopt.errors import PrefoptError
from prefopt.files import read_json, read_lines, remove_temporaries, write_json, write_text
from prefopt.hub import set_allow_downloads
from prefopt.preferences import check_media, read_rows, to_examples
from prefopt.progress import progress_bar
from prefopt.registry import get_registry
from prefopt.runner import missing_component_weights
from prefopt.trainer import DiffusionDPOTrainer, media_size
from prefopt_recipes.common.distributed import main_first
from prefopt_recipes.common.stages import CONFIG_FILE, config_hash, run_directory_lock
from prefopt_recipes.dpo.config import DPORecipeConfig

PAIRS_FILE = "pairs.jsonl"
TABLE_FILE = "table.json"

logger = logging.getLogger(__name__)


class DPORecipe:
    """Offline Diffusion-DPO on your own preference pairs (Pick-a-Pic, trl or prompt/winner/loser columns)."""

    name = "dpo"
    Config = DPORecipeConfig

    def __init__(self, config: DPORecipeConfig):
        self.config = config
        self.run_dir = Path(config.run.output_dir) / config.run.name
        self._examples = None
        set_allow_downloads(config.run.allow_downloads)

    @functools.cached_property
    def train_dir(self) -> Path:
        """Named by the model, trainer and data options and by the pairs themselves (each media file's size and
        modification time too), so edited data trains anew instead of resuming the old run's checkpoints."""
        c = self.config
        examples, _ = self.examples()
        pairs = [(e.prompt, e.winner, e.loser, e.weight) for e in examples]
        files = [(m, os.stat(m).st_size, os.stat(m).st_mtime_ns) for m in sorted({e.winner for e in examples}
                                                                                  | {e.loser for e in examples})]
        return self.run_dir / f"train-{config_hash(to_dict(c.backbone), to_dict(c.data), to_dict(c.trainer), pairs, files)}"

    @property
    def evaluation_dir(self) -> Path:
        return self.run_dir / f"evaluation-{config_hash(self.train_dir.name, to_dict(self.config.evaluation))}"

    # --- before any model loads ---------------------------------------------------------------------

    def missing_requirements(self) -> list[str]:
        c = self.config
        if c.run.build_tiny_models:
            from prefopt.tiny_models import save_tiny_pipeline

            save_tiny_pipeline(c.backbone.name, c.backbone.options.pretrained, seed=c.run.seed)
        return missing_component_weights([c.backbone, *c.evaluation.rewards.values()])

    def check_inputs(self) -> None:
        """Read the data and open every media file, so a bad row stops the run before a model loads."""
        examples, sources = self.examples()
        with progress_bar("checking media", 1) as bar:
            check_media(examples, sources)
            bar.advance()

    def examples(self):
        """(examples, source rows), read once; in-memory media are written to ``media/``."""
        if self._examples is None:
            rows, base = read_rows(self.config.data)
            self._examples = to_examples(self.config.data, rows, base, self.run_dir / "media")
        return self._examples

    # --- the run ------------------------------------------------------------------------------------

    def run(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with run_directory_lock(self.run_dir):
            remove_temporaries(self.run_dir)  # what killed writers left
            return self._run()

    def _run(self) -> Path:
        started = time.monotonic()
        examples, sources = self.examples()
        with main_first() as main:
            if main:  # the pairs and config a training folder was made from live in it, whatever later runs do
                self._write_pairs(examples, sources)
                write_json(self.train_dir / CONFIG_FILE, to_dict(self.config))
        backbone = self._backbone()
        lora = DiffusionDPOTrainer(backbone, self.config.trainer, self.train_dir).train(examples)
        del backbone  # its encoders are unloaded; evaluation samples with a freshly loaded pipeline
        with main_first() as main:  # small: sampled, scored and reported once, on the main process
            if main:
                table = self.evaluate(lora) if self.evaluation_prompts() else []
                from prefopt_recipes.dpo.report import write_report

                write_report(self, table, seconds=time.monotonic() - started)
                write_json(self.run_dir / CONFIG_FILE, to_dict(self.config))  # the last configuration that finished
        return self.run_dir

    def _backbone(self):
        spec = self.config.backbone
        return get_registry().create("backbones", spec.name, spec.options)

    def _write_pairs(self, examples, sources) -> None:
        rows = [{"row": row, "prompt": e.prompt, "winner": e.winner, "loser": e.loser, "weight": e.weight}
                for e, row in zip(examples, sources)]
        write_text(self.train_dir / PAIRS_FILE, "".join(json.dumps(r) + "\n" for r in rows))

    # --- evaluation -----------------------------------------------------------------------------------

    def evaluation_prompts(self) -> list[str]:
        e = self.config.evaluation
        prompts = list(e.prompts)
        if e.prompts_file:
            prompts += read_lines(e.prompts_file, "evaluation prompts file")
        return prompts

    def evaluate(self, lora: Path) -> list[dict]:
        """Sample base and trained model on every (prompt, seed); score both with every named reward."""
        table_path = self.evaluation_dir / TABLE_FILE
        if table_path.is_file():
            try:
                return read_json(table_path, "the evaluation table")
            except PrefoptError as e:  # damaged since it was written: made again from the samples on disk
                logger.warning("%s It is made again.", e)
        samples = self._sample(lora)
        rows = []
        for model, videos in samples.items():
            row = {"model": model, "samples": len(videos)}
            for reward_name, spec in self.config.evaluation.rewards.items():
                reward = get_registry().create("rewards", spec.name, spec.options)
                scores = reward.score([v for _, v in videos], [p for p, _ in videos], [])
                row[reward_name] = float(np.mean([s.value for s in scores]))
            rows.append(row)
        write_json(table_path, rows)
        return rows

    def _sample(self, lora: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
        from prefopt.media import read_media, write_media

        e, backbone = self.config.evaluation, self._backbone()
        frames, height, width = media_size(backbone, self.config.trainer)
        size = {"num_frames": e.num_frames or frames, "height": e.height or height, "width": e.width or width}
        jobs = [(p, s) for p in self.evaluation_prompts() for s in range(e.seeds_per_prompt)]
        suffix = ".png" if size["num_frames"] == 1 else ".mp4"
        samples: dict[str, list[tuple[str, np.ndarray]]] = {}
        for model, loras in (("base", []), ("trained", [lora])):
            backbone.use_loras(loras)
            folder, samples[model] = self.evaluation_dir / model, []
            with progress_bar(f"sampling ({model})", len(jobs)) as bar:
                for index, (prompt, seed) in enumerate(jobs):
                    path = folder / f"{index:03d}{suffix}"
                    if not path.is_file():  # samples already made survive a crash
                        made = backbone.generate([prompt], [seed], num_inference_steps=e.num_inference_steps,
                                                 guidance_scale=e.guidance_scale, **size)[0]
                        write_media(path, made.frames, fps=e.fps)
                    samples[model].append((prompt, read_media(path)))
                    bar.advance()
        return samples

"""Online RL: epochs of sample → score → group-relative advantages → LoRA update, then an evaluation on fresh seeds.

The recipe is its config and two stages, in ``<output_dir>/<name>/``:

1. ``train``: :class:`prefopt.online_rl.OnlineRLTrainer` for ``trainer.epochs`` epochs (``lora/`` in diffusers
   format; checkpoints every ``trainer.checkpoint_every`` epochs; ``metrics.jsonl`` with every reward and the
   training health per epoch; ``rollouts/`` with each epoch's samples, rewards and advantages, and a strip);
2. ``evaluation``: the base and the trained model sample the training prompts and the held-out prompts with seeds
   training never used, and the rewards and the judges score them (``table.json``, ``scores.json``).

The report is ``report/index.html``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from prefopt.distributed import main_first
from prefopt.errors import PrefoptError
from prefopt.files import read_json, read_lines, write_json
from prefopt.hub import resolve_path
from prefopt.layout import StageFolder, sample_name
from prefopt.lora_trainer import continues_when_longer
from prefopt.media import load_reference_photos, read_media
from prefopt.online_rl import OnlineRLTrainer, evaluation_seed
from prefopt.plugins import get_registry
from prefopt.preferences import read_rows
from prefopt.recipe import StagedRecipe
from prefopt.sampling import SampleJob, Sampling, sample_files
from prefopt.stages import RunResult, Stage, file_digest
from prefopt.trainer import media_size
from prefopt_recipes.common.sampling import trained_lora
from prefopt_recipes.common.scoring import check_prompts, load_rewards, score_in_memory
from prefopt_recipes.online_rl.config import OnlineRLRecipeConfig

MODELS = ("base", "trained")
PROMPT_SETS = ("trained", "heldout")  # the training prompts on fresh seeds; prompts never trained on


class OnlineRLRecipe(StagedRecipe):
    """Online RL (GRPO, DiffusionNFT, AWM) of a LoRA against named rewards, with judges and held-out prompts."""

    name = "online-rl"
    Config = OnlineRLRecipeConfig

    def __init__(self, config: OnlineRLRecipeConfig):
        super().__init__(config)
        self._prompts: list[str] | None = None

    def stages(self) -> list[Stage]:
        c = self.config
        trained = [c.backbone, c.rewards, c.reward_weights, c.reward_combination, self.prompts(),
                   [file_digest(p) for p in c.references], c.trainer, c.run.seed]
        return [Stage("train", trained, self.train, trained_lora, length=continues_when_longer(c.trainer, "epochs")),
                Stage("evaluation", [c.evaluation, c.judges, c.heldout_prompts], self.evaluate, evaluation_table,
                      inputs=("train",))]

    def components(self):
        return [self.config.backbone, *self.config.rewards.values(), *self.config.judges.values()]

    # --- before any model loads -----------------------------------------------------------------------

    def missing_inputs(self) -> list[str]:
        c = self.config
        missing = [f"reference photo `{p}` does not exist." for p in c.references if not resolve_path(p).is_file()]
        if c.prompts_file and not Path(c.prompts_file).is_file():
            missing.append(f"prompts file `{c.prompts_file}` does not exist.")
        if not (c.prompts or c.prompts_file or c.prompts_dataset.path):
            missing.append("no prompts: set `prompts`, `prompts_file` or `prompts_dataset.path`.")
        return missing

    def check_inputs(self) -> None:
        """Every prompt read, photos opened, and every reward and judge that can check prompts accepts them."""
        if self.config.references:
            load_reference_photos(self.config.references)
        prompts = [*self.prompts(), *self.config.heldout_prompts]
        check_prompts({**self.config.rewards, **self.config.judges}, prompts)

    def prompts(self) -> list[str]:
        """The training prompts: the list, the file's lines and the dataset column's values, in that order."""
        if self._prompts is None:
            c = self.config
            prompts = list(c.prompts)
            if c.prompts_file:
                prompts += read_lines(c.prompts_file, "prompts file")
            if c.prompts_dataset.path:
                prompts += dataset_prompts(c.prompts_dataset)
            if not prompts:
                raise PrefoptError("no training prompts: set `prompts`, `prompts_file` or `prompts_dataset.path`.")
            self._prompts = prompts
        return self._prompts

    def references(self) -> list[np.ndarray]:
        return load_reference_photos(self.config.references) if self.config.references else []

    # --- the stages -----------------------------------------------------------------------------------

    def train(self, folder: StageFolder) -> str:
        c = self.config
        trainer_config = dataclasses.replace(c.trainer, seed=c.run.seed)
        trainer = OnlineRLTrainer(self.backbone(), trainer_config, load_rewards(c.rewards), folder.path,
                                  weights=c.reward_weights, combine=c.reward_combination,
                                  references=self.references())
        trainer.train(self.prompts())
        return f"{c.trainer.algorithm}: {c.trainer.epochs} epochs of {c.trainer.prompts_per_epoch}×" \
               f"{c.trainer.group_size} rollouts"

    def evaluate(self, folder: StageFolder, train: Path) -> str:
        """Both models on both prompt sets, scored by every reward and judge: small, so on the main process."""
        with main_first() as main:
            if main:
                self.sample_and_score(folder, train)
        return "; ".join(f"{row['model']} ({row['prompts']}): " + ", ".join(
            f"{name} {row[name]:.2f}" for name in [*self.config.rewards, *self.config.judges])
            for row in evaluation_table(folder))

    def evaluation_prompts(self) -> dict[str, list[str]]:
        limit = self.config.evaluation.max_prompts
        trained = list(dict.fromkeys(self.prompts()))[:limit]
        return {"trained": trained, "heldout": list(self.config.heldout_prompts)}

    def sample_and_score(self, folder: StageFolder, train: Path) -> None:
        c, backbone = self.config, self.backbone()
        e = c.evaluation
        frames, height, width = media_size(backbone, c.trainer)
        sampling = Sampling.of(e, num_frames=e.num_frames or frames, height=e.height or height, width=e.width or width)
        scorers = {**load_rewards(c.rewards), **load_rewards(c.judges)}
        initial = [Path(c.trainer.init_lora)] if c.trainer.init_lora else []
        rows, scores = [], []
        for prompt_set, prompts in self.evaluation_prompts().items():
            # Odd seeds: training rollouts only ever used even ones.
            jobs = [SampleJob(sample_name(i), prompt, evaluation_seed(c.run.seed, p, j))
                    for i, (p, prompt, j) in enumerate((p, prompt, j) for p, prompt in enumerate(prompts)
                                                       for j in range(e.seeds_per_prompt))]
            for model, loras in zip(MODELS, (initial, [*initial, train])):
                if not jobs:
                    continue
                backbone.use_loras(loras)
                paths = sample_files(backbone, jobs, sampling, folder.samples(f"{model}-{prompt_set}"),
                                     description=f"sampling ({model}, {prompt_set} prompts)")
                samples = [(job.prompt, read_media(path)) for job, path in zip(jobs, paths)]
                scored = score_in_memory(scorers, samples, self.references(), description=f"scoring ({model})")
                rows.append({"model": model, "prompts": prompt_set, "samples": len(samples),
                             **{name: float(np.mean([s.value for s in values])) for name, values in scored.items()}})
                scores += [{"model": model, "prompts": prompt_set, "prompt": job.prompt, "seed": job.seed,
                            **{name: values[i].value for name, values in scored.items()}}
                           for i, job in enumerate(jobs)]
        write_json(folder.path / "scores.json", scores)
        write_json(folder.table, rows)

    def backbone(self):
        spec = self.config.backbone
        return get_registry().create("backbones", spec.name, spec.options)

    def write_report(self, result: RunResult) -> Path:
        from prefopt_recipes.online_rl.report import write_report

        return write_report(result, self.config)


def dataset_prompts(config) -> list[str]:
    """The prompts of a dataset column (``prompts_dataset``): each a non-empty string, the first ``limit``."""
    rows, _ = read_rows(config, what="prompts dataset", key="prompts_dataset.path")
    prompts = []
    for index, row in enumerate(rows):
        if config.limit is not None and len(prompts) >= config.limit:
            break
        if not isinstance(row, dict) or config.column not in row:
            columns = ", ".join(row) if isinstance(row, dict) else type(row).__name__
            raise PrefoptError(f"prompts dataset `{config.path}`, row {index + 1}, has no column `{config.column}` "
                               f"(it has {columns}); set `prompts_dataset.column`.")
        value = row[config.column]
        if not isinstance(value, str) or not value.strip():
            raise PrefoptError(f"prompts dataset `{config.path}`, row {index + 1}: column `{config.column}` holds "
                               f"{value!r}, not a prompt.")
        prompts.append(value.strip())
    if not prompts:
        raise PrefoptError(f"prompts dataset `{config.path}` holds no rows.")
    return prompts


# --- what each stage delivers (read back from its folder, which is how it is verified) --------------------


def evaluation_table(folder: StageFolder, **inputs) -> list[dict]:
    table = read_json(folder.table, "the evaluation table")
    if not isinstance(table, list) or not table or any(
            not isinstance(row, dict) or row.get("model") not in MODELS for row in table):
        raise PrefoptError(f"the evaluation table `{folder.table}` does not hold the base and the trained model.")
    return table

"""The generic reward-DPO loop: for each round, sample every prompt with the current model, score the samples with
every named reward, select pairs with the selector chain, and continue training the LoRA with Diffusion-DPO; then
sample and score the final model the same way, so the report shows each reward round by round.

Stages, in ``<output_dir>/<name>/``: ``round0`` … ``round<R-1>`` (each: samples in ``repository/``, pairs and their
picture, the trainer's checkpoints, metrics and ``lora/``), then ``final`` (the final model's samples, and with
held-out prompts those of the base and the final model). A stage's hash covers its options and every earlier
stage's, so a config change reruns from the first stage it touches and finished work of the old config stays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prefopt.data import verify_safetensors
from prefopt.distributed import main_first
from prefopt.errors import PrefoptError
from prefopt.files import read_lines, write_json
from prefopt.hub import resolve_path
from prefopt.interfaces import ScoredItems
from prefopt.layout import StageFolder
from prefopt.media import load_reference_photos
from prefopt.plugins import get_registry
from prefopt.recipe import StagedRecipe
from prefopt.repository import MediaRecord, MediaRepository
from prefopt.sampling import SampleJob, Sampling
from prefopt.selection import read_pairs_table, select_into
from prefopt.stages import RunResult, Stage
from prefopt.trainer import DiffusionDPOTrainer, media_size
from prefopt_recipes.common.sampling import examples_from_pairs, generate_into, verify_items
from prefopt_recipes.common.scoring import check_prompts, reward_keys, score_items, verify_scored
from prefopt_recipes.reward_dpo.config import RewardDPOConfig

HELDOUT_BASE, HELDOUT_FINAL = "heldout-base", "heldout-final"  # samples of prompts never trained on
SEED_STRIDE = 1_000_000  # sample seeds of `run.seed` s: s·10⁶ + prompt index · samples per prompt + sample index


@dataclass(frozen=True)
class Sampled:
    """What a stage sampled: its repository source and stage tag, per source (a round has one; `final` three)."""

    digest: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Round(Sampled):
    """A finished round: its samples and the LoRA it trained."""

    lora: Path


class RewardDPORecipe(StagedRecipe):
    """Generic generate → score → select → Diffusion-DPO loop over rounds, with any named rewards and selectors."""

    name = "reward-dpo"
    Config = RewardDPOConfig

    def stages(self) -> list[Stage]:
        c = self.config
        shared = [c.backbone, c.rewards, self.prompts(), self.reference_digests(), c.sampling, c.run.seed]
        rounds = [Stage(f"round{r}", [*shared, c.selection, c.trainer] if r == 0 else [c.selection, c.trainer],
                        self.round_maker(r), self.round_delivery(r), inputs=(f"round{r - 1}",) if r else ())
                  for r in range(c.rounds)]
        # chained: the final stage's hash covers every round's
        final = Stage("final", [c.heldout_prompts], self.sample_final, self.final_samples,
                      inputs=(f"round{c.rounds - 1}",))
        return [*rounds, final]

    def components(self):
        return [self.config.backbone, *self.config.rewards.values()]

    # --- before any model loads -------------------------------------------------------------------

    def missing_inputs(self) -> list[str]:
        missing = [f"reference photo `{p}` does not exist." for p in self.config.references if not resolve_path(p).is_file()]
        return missing + ([] if self.prompts() else ["no prompts: set `prompts` or `prompts_file`."])

    def check_inputs(self) -> None:
        """Before any sampling: reference photos read, and every reward that can check prompts accepts the training
        and held-out prompts."""
        if self.config.references:
            load_reference_photos(self.config.references)
        check_prompts(self.config.rewards, [*self.prompts(), *self.config.heldout_prompts])

    def prompts(self) -> list[str]:
        prompts = list(self.config.prompts)
        if self.config.prompts_file:
            prompts += read_lines(self.config.prompts_file, "prompts file")
        return prompts

    def reference_digests(self) -> list[str]:
        from prefopt.stages import file_digest

        return [file_digest(p) for p in self.config.references]

    # --- stages -----------------------------------------------------------------------------------

    def round_maker(self, index: int):
        def make(folder: StageFolder, **previous: Round) -> str:
            before = self._loras(previous.get(f"round{index - 1}"))
            items = self.sample_and_score(f"round{index}", folder.digest, before, self.prompts())
            selection = self.config.selection
            with main_first() as main:  # the main process selects and writes; every process reads the pairs
                if main:
                    select_into(folder, self.scored(items), selection.selectors, title=f"round {index}",
                                plot_x=selection.plot_x, plot_y=selection.plot_y, options="selection.selectors",
                                per_prompt=selection.per_prompt)
            pairs = read_pairs_table(folder.pairs)
            self.train(folder, pairs, previous.get(f"round{index - 1}"))
            return (f"{len(items)} samples scored ({self.means_text(items)}); {len(pairs)} pairs; DPO "
                    f"{self.config.trainer.max_steps} steps")

        return make

    def round_delivery(self, index: int):
        def deliver(folder: StageFolder, **previous: Round) -> Round:
            """What a round delivers: its scored samples, its pairs and its LoRA, whole."""
            self.verify_sampled(f"round{index}", folder.digest, self.prompts())
            read_pairs_table(folder.pairs)
            verify_safetensors(folder.lora, f"the LoRA of round {index}")
            return Round(folder.digest, (f"round{index}",), folder.lora)

        return deliver

    def sample_final(self, folder: StageFolder, **last: Round) -> str:
        final = self._loras(next(iter(last.values())))
        items = self.sample_and_score("final", folder.digest, final, self.prompts())
        summary = f"{len(items)} samples of the final model scored ({self.means_text(items)})"
        if self.config.heldout_prompts:
            base = self._loras(None)  # the base model (with `trainer.init_lora`, as round 0 samples)
            for stage, loras in ((HELDOUT_BASE, base), (HELDOUT_FINAL, final)):
                held = self.sample_and_score(stage, folder.digest, loras, self.config.heldout_prompts)
                summary += f"; {stage}: {self.means_text(held)}"
        return summary

    def final_samples(self, folder: StageFolder, **last: Round) -> Sampled:
        self.verify_sampled("final", folder.digest, self.prompts())
        heldout = (HELDOUT_BASE, HELDOUT_FINAL) if self.config.heldout_prompts else ()
        for stage in heldout:
            self.verify_sampled(stage, folder.digest, self.config.heldout_prompts)
        return Sampled(folder.digest, ("final", *heldout))

    def _loras(self, previous: Round | None) -> list[Path]:
        """The LoRAs a stage samples with: `trainer.init_lora` (under the reference and the policy) and the
        previous round's."""
        initial = [Path(self.config.trainer.init_lora)] if self.config.trainer.init_lora else []
        return initial + ([previous.lora] if previous is not None else [])

    # --- sample, score, select, train --------------------------------------------------------------

    def repository(self) -> MediaRepository:
        return MediaRepository(self.layout.repository)

    def backbone(self):
        spec = self.config.backbone
        return get_registry().create("backbones", spec.name, spec.options)

    def sampling(self, backbone) -> Sampling:
        """The sampling options with the media size resolved (empty: the backbone's defaults)."""
        frames, height, width = media_size(backbone, self.config.sampling)
        return Sampling.of(self.config.sampling, num_frames=frames, height=height, width=width)

    def sample_and_score(self, stage: str, digest: str, loras: list[Path], prompts: Sequence[str]) -> list[MediaRecord]:
        backbone, repo = self.backbone(), self.repository()
        backbone.use_loras(loras)
        per_prompt = self.config.sampling.samples_per_prompt
        # The same seeds every round: round r's samples differ from round r−1's only by the model. Runs with
        # different `run.seed`s draw from disjoint seed ranges, so their samples are independent.
        base_seed = self.config.run.seed * SEED_STRIDE
        jobs = [SampleJob(f"{stage}-{digest}-{p:04d}-{s:02d}", prompt, base_seed + p * per_prompt + s)
                for p, prompt in enumerate(prompts) for s in range(per_prompt)]
        generate_into(repo, backbone, jobs, self.sampling(backbone), source=stage, stage=digest,
                      description=f"sampling ({stage})")
        del backbone
        items = [r for r in repo.items([stage]) if r.stage == digest]
        references = load_reference_photos(self.config.references) if self.config.references else []
        score_items(repo, self.config.rewards, items, references)
        return items

    def verify_sampled(self, stage: str, digest: str, prompts: Sequence[str]) -> None:
        repo = self.repository()
        items = [r for r in repo.items([stage]) if r.stage == digest]
        verify_items(repo, items, len(prompts) * self.config.sampling.samples_per_prompt, f"the samples of `{stage}`")
        verify_scored(repo, self.config.rewards, items, f"the samples of `{stage}`")

    def scored(self, items: Sequence[MediaRecord]) -> ScoredItems:
        if not items:
            raise PrefoptError("no samples to score: check `prompts` and `sampling.samples_per_prompt`.")
        table = self.repository().score_table(reward_keys(self.config.rewards), [items[0].source])
        return table.subset(np.isin(table.ids, [r.id for r in items]))

    def train(self, folder: StageFolder, pairs, previous: Round | None) -> None:
        backbone = self.backbone()
        init = str(previous.lora.parent) if previous is not None else self.config.trainer.init_adapter
        sampling = self.sampling(backbone)
        config = dataclasses.replace(self.config.trainer, num_frames=sampling.num_frames, height=sampling.height,
                                     width=sampling.width, init_adapter=init)
        DiffusionDPOTrainer(backbone, config, folder.path).train(examples_from_pairs(self.repository(), pairs))

    def reward_means(self, items: Sequence[MediaRecord]) -> dict[str, float]:
        return {name: float(np.mean(values)) for name, values in self.scored(items).scores.items()}

    def means_text(self, items: Sequence[MediaRecord]) -> str:
        return ", ".join(f"{name} {value:.2f}" for name, value in self.reward_means(items).items())

    def write_report(self, result: RunResult) -> Path:
        from prefopt_recipes.reward_dpo.report import write_report

        rows = self.summary(result)
        write_json(self.layout.rewards_summary, rows)
        return write_report(result, self.config, rows, self.repository())

    def summary(self, result: RunResult) -> list[dict]:
        """Mean of every reward over each stage's samples: round 0 samples the base model, round r the model
        after r rounds, `final` the last one; `heldout-base` and `heldout-final` the held-out prompts."""
        repo, rows = self.repository(), []
        for sampled in (result[name] for name in result.stages):
            for source in sampled.sources:
                items = [r for r in repo.items([source]) if r.stage == sampled.digest]
                if items:
                    rows.append({"stage": source, "samples": len(items), **self.reward_means(items)})
        return rows

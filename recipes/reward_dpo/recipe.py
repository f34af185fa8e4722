"""The generic reward-DPO loop: for each round, sample every prompt with the current model, score the samples with
every named reward, select pairs with the selector chain, and continue training the LoRA with Diffusion-DPO; then
sample and score the final model the same way, so the report shows each reward round by round.

Run folder ``<output_dir>/<name>/``: ``repository/`` (samples, latents, scores), ``round<r>-<hash>/`` (pairs,
pair plot, the trainer's checkpoints, metrics and ``lora/``), ``final-<hash>/`` and ``report/``. A stage's hash
covers its options and every earlier stage's, so a config change reruns from the first stage it touches and
finished work of the old config stays on disk.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from rich.console import Console

from prefopt.data import verify_safetensors
from prefopt.errors import PrefoptError
from prefopt.files import read_lines, write_json
from prefopt.hub import set_allow_downloads
from prefopt.interfaces import PairIndices
from prefopt.lora import LORA_WEIGHTS_NAME
from prefopt.registry import get_registry
from prefopt.repository import MediaRepository
from prefopt.runner import missing_component_weights
from prefopt.selection import (
    EMPTY_PAIRS_PLOT,
    PAIRS_FILE,
    PAIRS_PLOT,
    plot_selection,
    read_pairs_table,
    run_chain,
    unite,
    write_pairs,
)
from prefopt.trainer import DiffusionDPOTrainer, media_size
from prefopt_plugins.rewards.common import load_reference_photos
from prefopt_recipes.common.distributed import main_first
from prefopt_recipes.common.generation import examples_from_pairs, generate_into, verify_items
from prefopt_recipes.common.scoring import check_prompts, reward_keys, score_items, verify_scored
from prefopt_recipes.common.stages import (
    StageRunner,
    clean_run,
    file_digest,
    run_directory_lock,
)
from prefopt_recipes.reward_dpo.config import RewardDPOConfig

SUMMARY_FILE = "rewards.json"  # every reward's mean per stage, in the run folder
HELDOUT_BASE, HELDOUT_FINAL = "heldout-base", "heldout-final"  # samples of prompts never trained on
SEED_STRIDE = 1_000_000  # sample seeds of `run.seed` s: s·10⁶ + prompt index · samples per prompt + sample index


class RewardDPORecipe:
    """Generic generate → score → select → Diffusion-DPO loop over rounds, with any named rewards and selectors."""

    name = "reward-dpo"
    Config = RewardDPOConfig

    def __init__(self, config: RewardDPOConfig):
        self.config = config
        self.run_dir = Path(config.run.output_dir) / config.run.name
        self.console = Console()
        self.digests: dict[str, str] = {}
        set_allow_downloads(config.run.allow_downloads)

    # --- before any model loads -------------------------------------------------------------------

    def missing_requirements(self) -> list[str]:
        c = self.config
        if c.run.build_tiny_models:
            from prefopt.tiny_models import save_tiny_clip, save_tiny_pipeline

            save_tiny_pipeline(c.backbone.name, c.backbone.options.pretrained, seed=c.run.seed)
            for spec in c.rewards.values():
                if hasattr(spec.options, "model") and spec.name in ("clip-semantic", "pickscore", "laion-aesthetic"):
                    save_tiny_clip(spec.options.model, seed=c.run.seed)
        missing = [f"reference photo `{p}` does not exist." for p in c.references if not Path(p).is_file()]
        missing += missing_component_weights([c.backbone, *c.rewards.values()])
        if not self.prompts():
            missing.append("no prompts: set `prompts` or `prompts_file`.")
        return missing

    def prompts(self) -> list[str]:
        prompts = list(self.config.prompts)
        if self.config.prompts_file:
            prompts += read_lines(self.config.prompts_file, "prompts file")
        return prompts

    def check_inputs(self) -> None:
        """Before any sampling: reference photos read, and every reward that can check prompts (the miniature
        action reward needs an action in each) accepts the training and held-out prompts."""
        if self.config.references:
            load_reference_photos(self.config.references)
        check_prompts(self.config.rewards, [*self.prompts(), *self.config.heldout_prompts])

    # --- stages -----------------------------------------------------------------------------------

    def stage_plan(self) -> list[tuple]:
        c = self.config
        shared = [c.backbone, c.rewards, self.prompts(), [file_digest(p) for p in c.references], c.sampling,
                  c.run.seed]
        rounds = [(f"round{r}", [*shared, c.selection, c.trainer] if r == 0 else [c.selection, c.trainer],
                   self._round_work(r), self._round_check(r)) for r in range(c.rounds)]
        # chained: the final stage's hash covers every round's
        return [*rounds, ("final", [c.heldout_prompts], self._final, self._verify_final)]

    def run(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with run_directory_lock(self.run_dir):
            runner = StageRunner(self.run_dir, self.console.print, config=self.config)
            plan = self.stage_plan()
            for name, covered, work, verify in plan:
                self.digests[name] = runner.run(name, covered, work, verify)
            runner.keep_only([name for name, *_ in plan])  # e.g. fewer rounds: the old last round is not current
            from prefopt_recipes.reward_dpo.report import write_report

            with main_first() as main:
                if main:
                    self.console.print(f"[bold]report:[/bold] {write_report(self, runner.timings())}")
            runner.finish()
        return self.run_dir

    def clean(self, dry_run: bool = False) -> list[Path]:
        """``prefopt clean``: remove stage folders of earlier configurations (only folders prefopt made)."""
        return clean_run(self.run_dir, [(name, covered) for name, covered, *_ in self.stage_plan()], dry_run)

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / f"{name}-{self.digests[name]}"

    def lora(self, round_index: int) -> Path:
        return self.stage_dir(f"round{round_index}") / "lora" / LORA_WEIGHTS_NAME

    def _round_work(self, round_index: int):
        def work(digest: str) -> str:
            self.digests[f"round{round_index}"] = digest
            items = self._sample_and_score(f"round{round_index}", digest, self._trained_before(round_index))
            pairs = self._selected(round_index, items)
            self._train(round_index, pairs)
            return (f"{len(items)} samples scored ({self._means_text(items)}); {len(pairs)} pairs; DPO "
                    f"{self.config.trainer.max_steps} steps")

        return work

    def _round_check(self, round_index: int):
        def verify(digest: str) -> None:
            """What a round delivers: its scored samples, its pairs and its LoRA, whole."""
            self._verify_sampled(f"round{round_index}", digest, self.prompts())
            folder = self.run_dir / f"round{round_index}-{digest}"
            read_pairs_table(folder / PAIRS_FILE)
            verify_safetensors(folder / "lora" / LORA_WEIGHTS_NAME, f"the LoRA of round {round_index}")

        return verify

    def _verify_final(self, digest: str) -> None:
        self._verify_sampled("final", digest, self.prompts())
        for stage in (HELDOUT_BASE, HELDOUT_FINAL) if self.config.heldout_prompts else ():
            self._verify_sampled(stage, digest, self.config.heldout_prompts)

    def _verify_sampled(self, stage: str, digest: str, prompts: list[str]) -> None:
        repo = self.repository()
        items = [r for r in repo.items([stage]) if r.stage == digest]
        verify_items(repo, items, len(prompts) * self.config.sampling.samples_per_prompt, f"the samples of `{stage}`")
        verify_scored(repo, self.config.rewards, items, f"the samples of `{stage}`")

    def _final(self, digest: str) -> str:
        self.digests["final"] = digest
        final = self._trained_before(self.config.rounds)
        items = self._sample_and_score("final", digest, final)
        summary = f"{len(items)} samples of the final model scored ({self._means_text(items)})"
        heldout = self.config.heldout_prompts
        if heldout:
            base = self._trained_before(0)  # the base model (with `trainer.init_lora`, as round 0 samples)
            for stage, loras in ((HELDOUT_BASE, base), (HELDOUT_FINAL, final)):
                held = self._sample_and_score(stage, digest, loras, heldout)
                summary += f"; {stage}: {self._means_text(held)}"
        return summary

    def stages_sampled(self) -> dict[str, str]:
        """Every stage whose samples the report shows → the stage hash its items carry."""
        stages = {f"round{r}": self.digests[f"round{r}"] for r in range(self.config.rounds)}
        stages["final"] = self.digests["final"]
        if self.config.heldout_prompts:
            stages.update({HELDOUT_BASE: self.digests["final"], HELDOUT_FINAL: self.digests["final"]})
        return stages

    def _trained_before(self, round_index: int) -> list[Path]:
        """The LoRAs a round samples with: `trainer.init_lora` (fused into the reference and the policy) and the
        previous round's."""
        fused = [Path(self.config.trainer.init_lora)] if self.config.trainer.init_lora else []
        return fused + ([self.lora(round_index - 1)] if round_index > 0 else [])

    # --- sample, score, select, train --------------------------------------------------------------

    def repository(self) -> MediaRepository:
        return MediaRepository(self.run_dir / "repository")

    def sampling(self, backbone):
        """The sampling options with the media size resolved (empty: the backbone's defaults)."""
        s = self.config.sampling
        frames, height, width = media_size(backbone, s)
        return dataclasses.replace(s, num_frames=frames, height=height, width=width)

    def _sample_and_score(self, stage: str, digest: str, loras: list[Path], prompts: list[str] | None = None) -> list:
        backbone, repo = self._backbone(), self.repository()
        backbone.use_loras(loras)
        sampling = self.sampling(backbone)
        per_prompt = sampling.samples_per_prompt
        # The same seeds every round: round r's samples differ from round r−1's only by the model. Runs with
        # different `run.seed`s draw from disjoint seed ranges, so their samples are independent.
        base_seed = self.config.run.seed * SEED_STRIDE
        jobs = [(f"{stage}-{digest}-{p:04d}-{s:02d}", prompt, base_seed + p * per_prompt + s)
                for p, prompt in enumerate(prompts or self.prompts()) for s in range(per_prompt)]
        generate_into(repo, backbone, jobs, source=stage, stage=digest, video=sampling, fps=sampling.fps,
                      description=f"sampling ({stage})")
        del backbone
        items = [r for r in repo.items([stage]) if r.stage == digest]
        references = load_reference_photos(self.config.references) if self.config.references else []
        score_items(repo, self.config.rewards, items, references)
        return items

    def scored(self, items):
        if not items:
            raise PrefoptError("no samples to score: check `prompts` and `sampling.samples_per_prompt`.")
        table = self.repository().score_table(reward_keys(self.config.rewards), [items[0].source])
        return table.subset(np.isin(table.ids, [r.id for r in items]))

    def _selected(self, round_index: int, items) -> list:
        """Select on the main process (it writes the pairs and their plot); every process reads them."""
        folder = self.stage_dir(f"round{round_index}")
        with main_first() as main:
            if main:
                selection = self.config.selection
                selectors = [get_registry().create("pair_selectors", s.name, s.options) for s in selection.selectors]
                table = self.scored(items)
                chosen = self._chain(table, selectors)
                label = "→".join(s.name for s in selection.selectors)
                fronts = selectors[0].frontiers(table) if hasattr(selectors[0], "frontiers") else None
                plot = folder / (PAIRS_PLOT if len(chosen) else EMPTY_PAIRS_PLOT)
                plot_selection(plot, table, chosen, selection.plot_x, selection.plot_y, f"round {round_index}", fronts)
                if len(chosen):
                    write_pairs(folder / PAIRS_FILE, unite([(table, chosen, label)]))
                else:  # an earlier attempt's pairs (other scores) must not stand in for an empty selection
                    (folder / PAIRS_FILE).unlink(missing_ok=True)
        if not (folder / PAIRS_FILE).is_file():
            raise PrefoptError(f"round {round_index} selected no pairs from {len(items)} scored samples; loosen the "
                               f"options under `selection.selectors` (see {folder / EMPTY_PAIRS_PLOT}).")
        return read_pairs_table(folder / PAIRS_FILE)

    def _chain(self, table, selectors) -> PairIndices:
        """The selector chain. With `per_prompt`, the first selector makes pairs within each prompt's samples
        (indices mapped back into the table) and the filters then run on all of them, so `topk` keeps the k
        best pairs of the round, not k per prompt."""
        if not self.config.selection.per_prompt:
            return run_chain(table, selectors)
        parts = []
        for prompt in dict.fromkeys(table.prompts):
            rows = np.flatnonzero(table.prompts == prompt)
            made = selectors[0].select(table.subset(table.prompts == prompt))
            parts.append((rows[made.winners], rows[made.losers], made.weights))
        pairs = PairIndices(*(np.concatenate(column) for column in zip(*parts))) if parts else PairIndices.empty()
        for selector in selectors[1:]:
            pairs = selector.select(table, pairs)
        return pairs

    def _train(self, round_index: int, pairs) -> None:
        folder = self.stage_dir(f"round{round_index}")
        backbone = self._backbone()
        sampling = self.sampling(backbone)
        init = str(self.lora(round_index - 1).parent) if round_index > 0 else self.config.trainer.init_adapter
        config = dataclasses.replace(self.config.trainer, num_frames=sampling.num_frames, height=sampling.height,
                                     width=sampling.width, init_adapter=init)
        DiffusionDPOTrainer(backbone, config, folder).train(examples_from_pairs(self.repository(), pairs))

    def _backbone(self):
        spec = self.config.backbone
        return get_registry().create("backbones", spec.name, spec.options)

    def reward_means(self, items) -> dict[str, float]:
        table = self.scored(items)
        return {name: float(np.mean(values)) for name, values in table.scores.items()}

    def _means_text(self, items) -> str:
        return ", ".join(f"{name} {value:.2f}" for name, value in self.reward_means(items).items())

    def summary(self) -> list[dict]:
        """Mean of every reward over each stage's samples: round 0 samples the base model, round r the model
        after r rounds, `final` the last one; `heldout-base` and `heldout-final` the held-out prompts."""
        repo, rows = self.repository(), []
        for name, digest in self.stages_sampled().items():
            items = [r for r in repo.items([name]) if r.stage == digest]
            if items:
                rows.append({"stage": name, "samples": len(items), **self.reward_means(items)})
        write_json(self.run_dir / SUMMARY_FILE, rows)
        return rows

"""The MagicID recipe: identity LoRA → prompts → repository → rewards → two-stage hybrid pairs → DPO → evaluation.

Each stage takes what earlier stages delivered and delivers what it made (read back from its folder, which is how
a finished stage is checked when a run skips it):

====================  ===================================================  =========================================
stage                 makes                                                delivers
====================  ===================================================  =========================================
``identity_lora``     V_id (the photos as static videos) and the LoRA      :class:`IdentityLora`
``prompts``           train and held-out prompts                           :class:`Prompts`
``repository``        V_s (base model) and V_t (identity LoRA) videos      :class:`Generated`
``scoring``           every reward's score of V_id ∪ V_s ∪ V_t             :class:`Scored`
``stage1``            identity-preferred pairs and DPO                     :class:`TrainedOnPairs`
``regenerate``        V_t from the stage-1 model, scored                   :class:`Scored`
``stage2``            dynamic-preferred pairs, trained with stage 1's      :class:`TrainedOnPairs`
``evaluation``        every model on held-out prompts, side by side        the evaluation table (rows)
====================  ===================================================  =========================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prefopt.data import PreferenceExample, SFTExample, verify_safetensors
from prefopt.distributed import main_first
from prefopt.errors import PrefoptError
from prefopt.files import read_json, write_json
from prefopt.interfaces import ChecksReferences, Pair, ReselectsPairs, ScoredItems
from prefopt.layout import StageFolder
from prefopt.lora_trainer import continues_when_longer
from prefopt.media import load_reference_photos
from prefopt.plugins import get_registry
from prefopt.recipe import StagedRecipe
from prefopt.repository import MediaRecord, MediaRepository, add_static_videos
from prefopt.sampling import SampleJob, Sampling
from prefopt.selection import read_pairs_table, select_into
from prefopt.stages import RunResult, Stage, file_digest, run_directory_lock
from prefopt.trainer import DiffusionDPOTrainer, TrainerConfig
from prefopt_recipes.common.sampling import examples_from_pairs, generate_into, verify_items
from prefopt_recipes.common.scoring import check_prompts, reward_keys, score_items, verify_scored
from prefopt_recipes.magicid.config import SEED_SCHEME, SOURCES, MagicIDConfig, SelectionConfig, run_seed_base
from prefopt_recipes.magicid.prompts import read_prompt_file, resolve_prompts

RESELECT = "reselect"  # `prefopt select` writes into `<stage>-reselect/`
# Seed offsets of the three kinds of generated videos: V_s, V_t and V_t regenerated never share a seed.
BASE_SEEDS, LORA_SEEDS, REGENERATED_SEEDS = 0, 100_000, 200_000


@dataclass(frozen=True)
class Prompts:
    train: list[str]
    eval: list[str]


@dataclass(frozen=True)
class IdentityLora:
    """The identity LoRA and V_id, the static videos of the reference photos it was trained on."""

    lora: Path
    static: tuple[str, ...]


@dataclass(frozen=True)
class Generated:
    """Repository items a stage generated."""

    ids: tuple[str, ...]


@dataclass(frozen=True)
class Scored:
    """The items pairs are selected from, each scored by every reward."""

    ids: tuple[str, ...]


@dataclass(frozen=True)
class TrainedOnPairs:
    """A DPO stage: its pairs and the LoRA it trained on them."""

    lora: Path
    pairs: list[Pair]


class MagicIDRecipe(StagedRecipe, ReselectsPairs):
    """MagicID: hybrid preference optimisation for identity-consistent, dynamic video customisation."""

    name = "magicid"
    Config = MagicIDConfig

    def stages(self) -> list[Stage]:
        c = self.config
        return [
            Stage("identity_lora", [c.backbone, c.references, self.photo_digests(), c.video, c.identity_lora],
                  self.train_identity_lora, self.identity_lora,
                  length=continues_when_longer(c.identity_lora, "max_steps")),
            Stage("prompts", [c.prompts], self.write_prompts, read_prompts),
            Stage("repository", [c.repository.lora_videos, c.repository.base_videos, c.video, c.run.seed,
                                 *([SEED_SCHEME] if c.run.seed else [])],
                  self.generate_repository, self.generated, inputs=("identity_lora", "prompts")),
            Stage("scoring", [c.rewards], self.score_repository, self.scored_repository,
                  inputs=("identity_lora", "repository")),
            Stage("stage1", [c.stage1, c.dpo_stage1], self.train_stage1, trained_on_pairs,
                  inputs=("identity_lora", "scoring"), length=continues_when_longer(c.dpo_stage1, "max_steps")),
            Stage("regenerate", [c.repository.regenerate_videos], self.regenerate, self.regenerated,
                  inputs=("identity_lora", "prompts", "scoring", "stage1")),
            Stage("stage2", [c.stage2, c.dpo_stage2], self.train_stage2, trained_on_pairs,
                  inputs=("identity_lora", "stage1", "regenerate"),
                  length=continues_when_longer(c.dpo_stage2, "max_steps")),
            Stage("evaluation", [c.evaluation], self.evaluate, self.evaluation_table,
                  inputs=("identity_lora", "stage1", "stage2", "prompts")),
        ]

    def components(self):
        return [self.config.backbone, *self.config.rewards.values()]

    def result_loras(self, layout) -> list[Path]:
        """The final model is the base with the identity LoRA and, over it, stage 2's DPO LoRA (docs/magicid.md)."""
        from prefopt.recipe import finished_lora

        return [finished_lora(layout, "identity_lora"), finished_lora(layout, "stage2")]

    # --- before any work ---------------------------------------------------------------------------

    def missing_inputs(self) -> list[str]:
        from prefopt.hub import resolve_path

        return [f"reference photo `{p}` does not exist." for p in self.config.references.photos
                if not resolve_path(p).is_file()]

    def missing_weights(self) -> list[str]:
        from prefopt.hub import missing_weights_message

        missing = []
        for model, label, option in ((self.config.prompts.writer_model, "prompt-writer", "`prompts.writer_model`"),
                                     (self.config.evaluation.clip_model, "CLIP (evaluation)", "`evaluation.clip_model`")):
            message = missing_weights_message(model, label, "config.json", option) if model else None
            missing += [message] if message else []
        return missing

    def check_inputs(self) -> None:
        """Before the first expensive step: every reference photo reads, the rewards that can check prompts accept
        the configured ones, and the identity reward finds its face (``ChecksReferences``)."""
        references = load_reference_photos(self.photos())
        p = self.config.prompts
        check_prompts(self.config.rewards, [*p.train, *(read_prompt_file(p.file) if p.file else []), *p.eval])
        spec = self.config.rewards["identity"]
        reward = get_registry().create("rewards", spec.name, spec.options)
        if isinstance(reward, ChecksReferences):
            reward.check_references(references)

    def photos(self) -> list[str]:
        from prefopt.hub import resolve_path

        return [str(resolve_path(p)) for p in self.config.references.photos]

    def photo_digests(self) -> list[str]:
        """The reference photos' content: a photo replaced at the same path reruns every stage."""
        return [file_digest(photo) for photo in self.photos()]

    # --- identity LoRA and prompts -----------------------------------------------------------------

    def train_identity_lora(self, folder: StageFolder) -> str:
        c, repo = self.config, self.repository()
        with main_first() as main:
            if main:
                add_static_videos(repo, self.photos(), num_frames=c.video.num_frames, height=c.video.height,
                                  width=c.video.width, prompt=c.references.subject_prompt,
                                  stage=f"static-{folder.digest}")
        repo.refresh()
        static = self.items_of(f"static-{folder.digest}")
        examples = [SFTExample(c.references.subject_prompt, str(repo.path(r.media_path))) for r in static]
        DiffusionDPOTrainer(self.backbone(), self.trainer_config(c.identity_lora), folder.path).train(examples)
        return f"identity LoRA trained for {c.identity_lora.max_steps} steps on {len(static)} static reference videos"

    def identity_lora(self, folder: StageFolder) -> IdentityLora:
        static = self.items_of(f"static-{folder.digest}")
        verify_items(self.repository(), static, len(self.config.references.photos), "the static reference videos")
        verify_safetensors(folder.lora, "the final LoRA of stage `identity_lora`")
        return IdentityLora(folder.lora, tuple(r.id for r in static))

    def write_prompts(self, folder: StageFolder) -> str:
        train, evaluation = resolve_prompts(self.config.prompts)
        with main_first() as main:
            if main:
                write_json(folder.prompts, {"train": train, "eval": evaluation})
        return f"{len(train)} train and {len(evaluation)} held-out evaluation prompts"

    # --- the repository ------------------------------------------------------------------------------

    def generate_repository(self, folder: StageFolder, identity_lora: IdentityLora, prompts: Prompts) -> str:
        c = self.config
        repo, backbone = self.repository(), self.backbone()
        backbone.use_loras([])
        made_s = generate_into(repo, backbone, self.jobs(f"base-{folder.digest}", c.repository.base_videos, prompts,
                                                         BASE_SEEDS), self.sampling(), source="base",
                               stage=folder.digest, description="generating V_s (base)")
        backbone.use_loras([identity_lora.lora])
        made_t = generate_into(repo, backbone, self.jobs(f"lora-{folder.digest}", c.repository.lora_videos, prompts,
                                                         LORA_SEEDS), self.sampling(), source="lora",
                               stage=folder.digest, description="generating V_t (identity LoRA)")
        return (f"V_t {c.repository.lora_videos} videos, V_s {c.repository.base_videos} "
                f"({made_t + made_s} generated by this process)")

    def generated(self, folder: StageFolder, **earlier) -> Generated:
        items = self.items_of(folder.digest)
        c = self.config.repository
        verify_items(self.repository(), items, c.lora_videos + c.base_videos, "the repository stage")
        return Generated(tuple(r.id for r in items))

    def score_repository(self, folder: StageFolder, identity_lora: IdentityLora, repository: Generated) -> str:
        counts = self.score((*identity_lora.static, *repository.ids))
        return ", ".join(f"{role}: {n} scored" for role, n in counts.items())

    def scored_repository(self, folder: StageFolder, identity_lora: IdentityLora, repository: Generated) -> Scored:
        return self.verified_scores((*identity_lora.static, *repository.ids), "the scoring stage")

    def regenerate(self, folder: StageFolder, identity_lora: IdentityLora, prompts: Prompts, scoring: Scored,
                   stage1: TrainedOnPairs) -> str:
        c = self.config
        backbone = self.backbone()
        backbone.use_loras([identity_lora.lora, stage1.lora])
        jobs = self.jobs(f"regen-{folder.digest}", c.repository.regenerate_videos, prompts, REGENERATED_SEEDS)
        made = generate_into(self.repository(), backbone, jobs, self.sampling(), source="lora",
                             stage=f"regen-{folder.digest}", description="regenerating V_t (stage-1 model)")
        self.score((*scoring.ids, *(job.name for job in jobs)))
        return f"{c.repository.regenerate_videos} videos from the stage-1 model ({made} generated by this process), scored"

    def regenerated(self, folder: StageFolder, scoring: Scored, **earlier) -> Scored:
        items = self.items_of(f"regen-{folder.digest}")
        verify_items(self.repository(), items, self.config.repository.regenerate_videos, "the regenerate stage")
        return self.verified_scores((*scoring.ids, *(r.id for r in items)), "the regenerate stage")

    def jobs(self, prefix: str, count: int, prompts: Prompts, seed_offset: int) -> list[SampleJob]:
        return [SampleJob(f"{prefix}-{i:04d}", prompts.train[i % len(prompts.train)],
                          run_seed_base(self.config.run.seed) + seed_offset + i) for i in range(count)]

    def score(self, ids) -> dict[str, int]:
        references = load_reference_photos(self.photos())
        items = self.repository().items_by_id()
        return score_items(self.repository(), self.config.rewards, [items[i] for i in ids], references)

    def verified_scores(self, ids, what: str) -> Scored:
        items = self.repository().items_by_id()
        missing = next((i for i in ids if i not in items), None)
        if missing is not None:
            raise PrefoptError(f"{what}: item `{missing}` is missing from `{self.layout.repository}`.")
        verify_scored(self.repository(), self.config.rewards, [items[i] for i in ids], what)
        return Scored(tuple(ids))

    def table(self, scored: Scored) -> ScoredItems:
        """The scored items as columns for the selectors."""
        table = self.repository().score_table(reward_keys(self.config.rewards))
        return table.subset(np.isin(table.ids, list(scored.ids)))

    # --- the two DPO stages --------------------------------------------------------------------------

    def train_stage1(self, folder: StageFolder, identity_lora: IdentityLora, scoring: Scored) -> str:
        pairs = self.select(folder, "stage1", scoring)
        config = self.trainer_config(self.config.dpo_stage1, init_lora=str(identity_lora.lora))
        DiffusionDPOTrainer(self.backbone(), config, folder.path).train(self.examples(pairs))
        return f"{len(pairs)} identity-preferred pairs; DPO {config.max_steps} steps"

    def train_stage2(self, folder: StageFolder, identity_lora: IdentityLora, stage1: TrainedOnPairs,
                     regenerate: Scored) -> str:
        pairs = self.select(folder, "stage2", regenerate, also=stage1.pairs)  # P = P_dy ∪ P_id
        config = self.trainer_config(self.config.dpo_stage2, init_lora=str(identity_lora.lora),
                                     init_adapter=str(stage1.lora.parent))
        DiffusionDPOTrainer(self.backbone(), config, folder.path).train(self.examples(pairs))
        return (f"{len(pairs) - len(stage1.pairs)} dynamic-preferred + {len(stage1.pairs)} identity pairs; DPO "
                f"{config.max_steps} steps")

    def select(self, folder: StageFolder, stage: str, scored: Scored, also: list[Pair] = ()) -> list[Pair]:
        """Select on the main process (it writes the pairs and their picture); every process reads the pairs."""
        selection: SelectionConfig = getattr(self.config, stage)
        with main_first() as main:
            if main:
                select_into(folder, self.table(scored), selection.selectors, title=stage, plot_x=selection.plot_x,
                            plot_y=selection.plot_y, options=f"{stage}.selectors", pool=pool_sources(selection),
                            also=also, keep_earlier=folder.digest == RESELECT)
        return read_pairs_table(folder.pairs)

    def examples(self, pairs: list[Pair]) -> list[PreferenceExample]:
        return examples_from_pairs(self.repository(), pairs)

    # --- evaluation and report -----------------------------------------------------------------------

    def evaluate(self, folder: StageFolder, identity_lora: IdentityLora, stage1: TrainedOnPairs,
                 stage2: TrainedOnPairs, prompts: Prompts) -> str:
        from prefopt_recipes.magicid.evaluation import evaluate_models

        loras = {"base": [], "identity": [identity_lora.lora], "stage1": [identity_lora.lora, stage1.lora],
                 "magicid": [identity_lora.lora, stage2.lora]}
        with main_first() as main:
            if main:  # small: generated and scored once, on the main process
                evaluate_models(folder, self.config, self.backbone(), loras, prompts.eval, self.photos(),
                                self.sampling(batch_size=1))
        table = self.evaluation_table(folder, prompts=prompts)
        return "; ".join(f"{row['model']}: id {row['identity']:.2f} dyn {row['dynamic']:.2f}" for row in table)

    def evaluation_table(self, folder: StageFolder, prompts: Prompts, **earlier) -> list[dict]:
        from prefopt_recipes.magicid.evaluation import read_evaluation

        return read_evaluation(folder, len(prompts.eval) * self.config.evaluation.videos_per_prompt)

    def write_report(self, result: RunResult) -> Path:
        from prefopt_recipes.magicid.report import write_report

        return write_report(result, self.config, self.repository(), self.photos(), self.table(result["regenerate"]))

    # --- shared helpers -------------------------------------------------------------------------------

    def repository(self) -> MediaRepository:
        return MediaRepository(self.layout.repository)

    def items_of(self, stage: str) -> list[MediaRecord]:
        return [r for r in self.repository().items() if r.stage == stage]

    def backbone(self):
        spec = self.config.backbone
        return get_registry().create("backbones", spec.name, spec.options)

    def sampling(self, **changes) -> Sampling:
        return Sampling.of(self.config.video, **changes)

    def trainer_config(self, trainer: TrainerConfig, **changes) -> TrainerConfig:
        """A stage's trainer options with the media size of `video` (the stages' sizes are refused in the config)."""
        video = self.config.video
        return dataclasses.replace(trainer, num_frames=video.num_frames, height=video.height, width=video.width,
                                   **changes)

    def select_pairs(self, stage: str = "all") -> None:
        """Select pairs again on the scored repository of the run that finished last (``prefopt select``), with the
        selectors of this configuration, into ``<stage>-reselect/``."""
        if stage not in ("stage1", "stage2", "all"):
            raise PrefoptError(f"`--stage` must be stage1, stage2 or all, got `{stage}`.")
        with run_directory_lock(self.layout):
            needed = ("identity_lora", "repository", "scoring") + (() if stage == "stage1" else ("regenerate",))
            done = self.finished(needed)
            scored = {"stage1": self.scored_repository(done["scoring"], self.identity_lora(done["identity_lora"]),
                                                       self.generated(done["repository"]))}
            if "regenerate" in done:
                scored["stage2"] = self.regenerated(done["regenerate"], scored["stage1"])
            for name in (("stage1", "stage2") if stage == "all" else (stage,)):
                folder = self.layout.stage(name, RESELECT)
                records = self.select(folder, name, scored[name])
                self.console.print(f"{name}: {len(records)} pairs → {folder.path}")

    def finished(self, names) -> dict[str, StageFolder]:
        """The folders of stages the last run finished; one sentence when one has not."""
        if not self.layout.index.is_file():
            raise PrefoptError(f"no run at `{self.layout.root}`: run `prefopt run` first to build and score a "
                               "repository.")
        index = read_json(self.layout.index, "the stage index")
        missing = [n for n in names if index.get(n, {}).get("status") != "done"]
        if missing:
            raise PrefoptError(f"stage `{missing[0]}` of `{self.layout.root}` has not finished; `prefopt select` "
                               "needs the scored repository of a finished run.")
        return {n: self.layout.current(n) for n in names}


def read_prompts(folder: StageFolder) -> Prompts:
    prompts = read_json(folder.prompts, "the prompts file")
    if not (isinstance(prompts, dict) and prompts.get("train") and prompts.get("eval")):
        raise PrefoptError(f"the prompts file `{folder.prompts}` lacks train or eval prompts.")
    return Prompts(prompts["train"], prompts["eval"])


def trained_on_pairs(folder: StageFolder, **earlier) -> TrainedOnPairs:
    verify_safetensors(folder.lora, f"the final LoRA of stage `{folder.stage}`")
    return TrainedOnPairs(folder.lora, read_pairs_table(folder.pairs))


def pool_sources(selection: SelectionConfig) -> list[str]:
    """The sources a selection chain draws from (its selectors' options that name sources)."""
    from prefopt_recipes.common.config import NAMES

    sources: list[str] = []
    for spec in selection.selectors:
        for f in dataclasses.fields(spec.options):
            if f.metadata.get(NAMES) == "source":
                sources += [s for s in getattr(spec.options, f.name) or [] if s in SOURCES and s not in sources]
    return sources

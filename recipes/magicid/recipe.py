"""The MagicID recipe: identity LoRA → repository → rewards → two-stage hybrid pairs → DPO → evaluation → report."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
from rich.console import Console

from prefopt.data import PreferenceExample, SFTExample, verify_safetensors
from prefopt.errors import PrefoptError
from prefopt.files import read_json, write_json
from prefopt.hub import resolve_path, set_allow_downloads
from prefopt.lora import LORA_WEIGHTS_NAME
from prefopt.registry import get_registry
from prefopt.repository import MediaRepository, add_static_videos
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
from prefopt.trainer import DiffusionDPOTrainer
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
from prefopt_recipes.magicid.config import MagicIDConfig
from prefopt_recipes.magicid.prompts import read_prompt_file, resolve_prompts


def _pool_sources(selection) -> list[str]:
    """The sources a selection chain draws from (its selectors' `sources`, `winner_sources`, `loser_sources`)."""
    sources: list[str] = []
    for spec in selection.selectors:
        for name in ("sources", "winner_sources", "loser_sources"):
            sources += [s for s in getattr(spec.options, name, None) or [] if s not in sources]
    return sources


class MagicIDRecipe:
    """MagicID: hybrid preference optimisation for identity-consistent, dynamic video customisation."""

    name = "magicid"
    Config = MagicIDConfig

    def __init__(self, config: MagicIDConfig):
        self.config = config
        self.run_dir = Path(config.run.output_dir) / config.run.name
        self.console = Console()
        self.digests: dict[str, str] = {}
        set_allow_downloads(config.run.allow_downloads)

    # --- requirements ------------------------------------------------------------------------------

    def missing_requirements(self) -> list[str]:
        if self.config.run.build_tiny_models:
            with main_first() as main:
                if main:
                    self._build_tiny_models()
        missing = [f"reference photo `{p}` does not exist." for p in self.config.references.photos
                   if not resolve_path(p).is_file()]
        missing += missing_component_weights([self.config.backbone, *self.config.rewards.values()])
        from prefopt.hub import missing_weights_message

        if self.config.prompts.writer_model:
            message = missing_weights_message(self.config.prompts.writer_model, "prompt-writer", "config.json",
                                              "`prompts.writer_model`")
            if message:
                missing.append(message)
        if self.config.evaluation.clip_model:
            message = missing_weights_message(self.config.evaluation.clip_model, "CLIP (evaluation)", "config.json",
                                              "`evaluation.clip_model`")
            if message:
                missing.append(message)
        return missing

    def check_inputs(self) -> None:
        """Before the first expensive step: every reference photo reads, and the identity reward finds its face
        (a reward that can check references offers ``check_references``)."""
        references = load_reference_photos(self.photos())
        p = self.config.prompts
        check_prompts(self.config.rewards, [*p.train, *(read_prompt_file(p.file) if p.file else []), *p.eval])
        spec = self.config.rewards["identity"]
        reward = get_registry().create("rewards", spec.name, spec.options)
        check = getattr(reward, "check_references", None)
        if check is not None:
            check(references)

    def _build_tiny_models(self) -> None:
        from prefopt.tiny_models import save_tiny_clip, save_tiny_pipeline

        self.console.print("[bold yellow]Quickstart: building tiny randomly initialised models. Their videos are "
                           "noise: this run shows the mechanics of every stage, not results.[/bold yellow]")
        backbone = self.config.backbone
        save_tiny_pipeline(backbone.name, backbone.options.pretrained, seed=self.config.run.seed)
        for spec in self.config.rewards.values():
            if spec.name == "clip-semantic":
                save_tiny_clip(spec.options.model, seed=self.config.run.seed)

    # --- shared helpers ----------------------------------------------------------------------------

    def repository(self) -> MediaRepository:
        return MediaRepository(self.run_dir / "repository")

    def backbone(self):
        spec = self.config.backbone
        return get_registry().create("backbones", spec.name, spec.options)

    def reward_keys(self) -> dict[str, str]:
        return reward_keys(self.config.rewards)

    def photos(self) -> list[str]:
        return [str(resolve_path(p)) for p in self.config.references.photos]

    def _trainer_config(self, trainer_config, **changes):
        video = self.config.video
        return dataclasses.replace(trainer_config, num_frames=video.num_frames, height=video.height,
                                   width=video.width, **changes)

    def stage_dir(self, stage: str, digest: str | None = None) -> Path:
        """A stage's output folder, `<stage>-<config hash>` (the current hash unless one is given)."""
        return self.run_dir / f"{stage}-{digest or self.digests[stage]}"

    def lora(self, stage: str, digest: str | None = None) -> Path:
        """The final LoRA file of a training stage (`identity_lora`, `stage1`, `stage2`)."""
        return self.stage_dir(stage, digest) / "lora" / LORA_WEIGHTS_NAME

    def _verify_lora(self, stage: str, digest: str) -> None:
        """A training stage is done only when its final LoRA reads back whole (and its pairs, for DPO stages)."""
        verify_safetensors(self.lora(stage, digest), f"the final LoRA of stage `{stage}`")
        if stage in ("stage1", "stage2"):
            read_pairs_table(self.stage_dir(stage, digest) / PAIRS_FILE)

    def _verify_prompts(self, digest: str) -> None:
        prompts = read_json(self.stage_dir("prompts", digest) / "prompts.json", "the prompts file")
        if not (isinstance(prompts, dict) and prompts.get("train") and prompts.get("eval")):
            raise PrefoptError(f"the prompts file in `{self.stage_dir('prompts', digest)}` lacks train or eval prompts.")

    def _stage_items(self, stage: str) -> list:
        return [r for r in self.repository().items() if r.stage == stage]

    def _verify_repository(self, digest: str) -> None:
        c = self.config.repository
        verify_items(self.repository(), self._stage_items(digest), c.lora_videos + c.base_videos,
                     "the repository stage")

    def _verify_scored(self, digest: str) -> None:
        verify_scored(self.repository(), self.config.rewards, self.current_items(), "the scoring stage")

    def _verify_regenerated(self, digest: str) -> None:
        items = self._stage_items(f"regen-{digest}")
        verify_items(self.repository(), items, self.config.repository.regenerate_videos, "the regenerate stage")
        verify_scored(self.repository(), self.config.rewards, items, "the regenerate stage")

    def _verify_evaluation(self, digest: str) -> None:
        from prefopt_recipes.magicid.evaluation import TABLE_FILE, video_name

        folder = self.stage_dir("evaluation", digest)
        table = read_json(folder / TABLE_FILE, "the evaluation table")
        videos = len(self.prompts()["eval"]) * self.config.evaluation.videos_per_prompt
        try:
            missing = [folder / Path(row["folder"]).name / video_name(i) for row in table for i in range(videos)
                       if not (folder / Path(row["folder"]).name / video_name(i)).is_file()]
        except (KeyError, TypeError) as e:
            raise PrefoptError(f"the evaluation table `{folder / TABLE_FILE}` has been edited ({e!r}).") from e
        if missing:
            raise PrefoptError(f"evaluation video `{missing[0]}` is missing.")

    # --- the pipeline ------------------------------------------------------------------------------

    def photo_digests(self) -> list[str]:
        """The reference photos' content: a photo replaced at the same path reruns every stage."""
        return [file_digest(photo) for photo in self.photos()]

    def run(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with run_directory_lock(self.run_dir):
            return self._run_stages()

    def stage_plan(self) -> list[tuple]:
        """(name, what its hash covers, work, verify) for every stage, in order."""
        c = self.config

        def trained(stage: str):
            return functools.partial(self._verify_lora, stage)

        return [
            ("identity_lora", [c.backbone, c.references, self.photo_digests(), c.video, c.identity_lora],
             self._identity_lora, trained("identity_lora")),
            ("prompts", [c.prompts], self._prompts, self._verify_prompts),
            ("repository", [c.repository.lora_videos, c.repository.base_videos, c.video, c.run.seed], self._repo,
             self._verify_repository),
            ("scoring", [c.rewards], self._score_repository, self._verify_scored),
            ("stage1", [c.stage1, c.dpo_stage1], self._stage1, trained("stage1")),
            ("regenerate", [c.repository.regenerate_videos], self._regenerate, self._verify_regenerated),
            ("stage2", [c.stage2, c.dpo_stage2], self._stage2, trained("stage2")),
            ("evaluation", [c.evaluation], self._evaluate, self._verify_evaluation),
        ]

    def _run_stages(self) -> Path:
        runner = StageRunner(self.run_dir, self.console.print, config=self.config)
        for name, stage_config, work, verify in self.stage_plan():
            self.digests[name] = runner.run(name, stage_config, work, verify)
        from prefopt_recipes.magicid.report import write_report

        with main_first() as main:
            if main:
                index = write_report(self, runner.timings())
                self.console.print(f"[bold]report:[/bold] {index}")
        runner.finish()
        return self.run_dir

    def _identity_lora(self, digest: str) -> str:
        c = self.config
        repo = self.repository()
        with main_first() as main:
            if main:
                add_static_videos(repo, self.photos(), num_frames=c.video.num_frames, height=c.video.height,
                                  width=c.video.width, prompt=c.references.subject_prompt, stage=f"static-{digest}")
        repo.refresh()
        static = [r for r in repo.items(["static"]) if r.stage == f"static-{digest}"]
        examples = [SFTExample(c.references.subject_prompt, str(repo.path(r.media_path))) for r in static]
        trainer = DiffusionDPOTrainer(self.backbone(), self._trainer_config(c.identity_lora),
                                      self.stage_dir("identity_lora", digest))
        trainer.train(examples)
        return f"identity LoRA trained for {c.identity_lora.max_steps} steps on {len(static)} static reference videos"

    def _prompts(self, digest: str) -> str:
        train, evaluation = resolve_prompts(self.config.prompts)
        with main_first() as main:
            if main:
                write_json(self.stage_dir("prompts", digest) / "prompts.json",
                                      {"train": train, "eval": evaluation})
        return f"{len(train)} train and {len(evaluation)} held-out evaluation prompts"

    def prompts(self) -> dict[str, list[str]]:
        return json.loads((self.stage_dir("prompts") / "prompts.json").read_text())

    def _jobs(self, prefix: str, count: int, seed_offset: int) -> list[tuple[str, str, int]]:
        prompts = self.prompts()["train"]
        return [(f"{prefix}-{i:04d}", prompts[i % len(prompts)], self.config.run.seed + seed_offset + i)
                for i in range(count)]

    def _repo(self, digest: str) -> str:
        c = self.config
        repo, backbone = self.repository(), self.backbone()
        common = {"video": c.video, "fps": c.video.fps, "stage": digest}
        backbone.use_loras([])
        made_s = generate_into(repo, backbone, self._jobs(f"base-{digest}", c.repository.base_videos, 0),
                               source="base", description="generating V_s (base)", **common)
        backbone.use_loras([self.lora("identity_lora")])
        made_t = generate_into(repo, backbone, self._jobs(f"lora-{digest}", c.repository.lora_videos, 100_000),
                               source="lora", description="generating V_t (identity LoRA)", **common)
        return (f"V_t {c.repository.lora_videos} videos, V_s {c.repository.base_videos} "
                f"({made_t + made_s} generated by this process)")

    def current_items(self):
        """Items of this configuration: V_id, and V_t/V_s/regenerated videos of the current stage hashes."""
        stages = {f"static-{self.digests.get('identity_lora')}", self.digests.get("repository"),
                  f"regen-{self.digests.get('regenerate')}"}
        return [r for r in self.repository().items() if r.stage in stages]

    def _score_repository(self, digest: str) -> str:
        counts = self._score(self.current_items())
        return ", ".join(f"{role}: {n} scored" for role, n in counts.items())

    def _score(self, items) -> dict[str, int]:
        references = load_reference_photos(self.photos())
        return score_items(self.repository(), self.config.rewards, items, references)

    def scored(self, sources: list[str] | None = None):
        table = self.repository().score_table(self.reward_keys(), sources)
        current = {r.id for r in self.current_items()}
        return table.subset(np.isin(table.ids, list(current)))

    def _select(self, stage: str, digest: str, extra_pairs: list | None = None) -> list:
        selection = getattr(self.config, stage)
        registry = get_registry()
        selectors = [registry.create("pair_selectors", s.name, s.options) for s in selection.selectors]
        items = self.scored()
        pairs = run_chain(items, selectors)
        records = unite([(items, pairs, f"{stage}:" + "→".join(s.name for s in selection.selectors))])
        folder = self.stage_dir(stage, digest)
        fronts = selectors[0].frontiers(items) if hasattr(selectors[0], "frontiers") else None
        records = records + [p for p in (extra_pairs or []) if (p.winner_id, p.loser_id) not in
                             {(r.winner_id, r.loser_id) for r in records}]
        # An empty selection's picture goes beside, not over, an earlier selection's pairs (`prefopt select`).
        plot = folder / (PAIRS_PLOT if records else EMPTY_PAIRS_PLOT)
        plot_selection(plot, items, pairs, selection.plot_x, selection.plot_y, stage, fronts,
                       pool=_pool_sources(selection), trained=len(records))
        if not records:
            raise PrefoptError(f"{stage} selected no pairs from {len(items)} scored videos; loosen the selector "
                               f"options under `{stage}.selectors` (see {plot}).")
        write_pairs(folder / PAIRS_FILE, records)
        return records

    def _examples(self, pairs) -> list[PreferenceExample]:
        return examples_from_pairs(self.repository(), pairs)

    def _selected(self, stage: str, digest: str, extra_pairs: list | None = None) -> list:
        """Select on the main process (it writes the parquet and plot); every process reads the pairs."""
        with main_first() as main:
            if main:
                self._select(stage, digest, extra_pairs)
        return read_pairs_table(self.stage_dir(stage, digest) / PAIRS_FILE)

    def _stage1(self, digest: str) -> str:
        pairs = self._selected("stage1", digest)
        config = self._trainer_config(self.config.dpo_stage1, init_lora=str(self.lora("identity_lora")))
        DiffusionDPOTrainer(self.backbone(), config, self.stage_dir("stage1", digest)).train(self._examples(pairs))
        return f"{len(pairs)} identity-preferred pairs; DPO {config.max_steps} steps"

    def _regenerate(self, digest: str) -> str:
        c = self.config
        backbone = self.backbone()
        backbone.use_loras([self.lora("identity_lora"), self.lora("stage1")])
        repo = self.repository()
        made = generate_into(repo, backbone, self._jobs(f"regen-{digest}", c.repository.regenerate_videos, 200_000),
                             source="lora", stage=f"regen-{digest}", video=c.video, fps=c.video.fps,
                             description="regenerating V_t (stage-1 model)")
        self.digests["regenerate"] = digest
        self._score(self.current_items())
        return f"{c.repository.regenerate_videos} videos from the stage-1 model ({made} generated by this process), scored"

    def _stage2(self, digest: str) -> str:
        stage1_pairs = read_pairs_table(self.stage_dir("stage1") / PAIRS_FILE)
        pairs = self._selected("stage2", digest, extra_pairs=stage1_pairs)  # P = P_dy ∪ P_id
        config = self._trainer_config(self.config.dpo_stage2, init_lora=str(self.lora("identity_lora")),
                                      init_adapter=str(self.lora("stage1").parent))
        DiffusionDPOTrainer(self.backbone(), config, self.stage_dir("stage2", digest)).train(self._examples(pairs))
        return f"{len(pairs) - len(stage1_pairs)} dynamic-preferred + {len(stage1_pairs)} identity pairs; DPO {config.max_steps} steps"

    def _evaluate(self, digest: str) -> str:
        from prefopt_recipes.magicid.evaluation import TABLE_FILE, evaluate_models

        folder = self.stage_dir("evaluation", digest)
        with main_first() as main:
            if main:  # small: generated and scored once, on the main process
                evaluate_models(self, folder)
        table = json.loads((folder / TABLE_FILE).read_text())
        return "; ".join(f"{row['model']}: id {row['identity']:.2f} dyn {row['dynamic']:.2f}" for row in table)

    def clean(self, dry_run: bool = False) -> list[Path]:
        """``prefopt clean``: remove stage folders of earlier configurations (only folders prefopt made)."""
        return clean_run(self.run_dir, [(name, covered) for name, covered, _, _ in self.stage_plan()], dry_run)

    def select_pairs(self, stage: str = "all") -> None:
        """Re-run pair selection on the existing, scored repository (``prefopt select``)."""
        state_file = self.run_dir / "stages.json"
        if not state_file.is_file():
            raise PrefoptError(f"no run at `{self.run_dir}`: run `prefopt run` first to build and score a repository.")
        with run_directory_lock(self.run_dir):
            try:
                state = json.loads(state_file.read_text())
            except ValueError as e:
                raise PrefoptError(f"`{state_file}` is unreadable ({e}); re-run `prefopt run` to rebuild it.") from e
            needed = ("scoring",) if stage == "stage1" else ("scoring", "regenerate")  # stage 2 pools V_t too
            missing = [n for n in needed if state.get(n, {}).get("status") != "done"]
            if missing:
                raise PrefoptError(f"stage `{missing[0]}` of `{self.run_dir}` has not finished; `prefopt select` "
                                   "needs the scored repository of a finished run.")
            self.digests = {name: record["hash"] for name, record in state.items()}
            for name in (("stage1", "stage2") if stage == "all" else (stage,)):
                if name not in ("stage1", "stage2"):
                    raise PrefoptError(f"`--stage` must be stage1, stage2 or all, got `{name}`.")
                records = self._select(name, "reselect")
                self.console.print(f"{name}: {len(records)} pairs → {self.stage_dir(name, 'reselect')}")

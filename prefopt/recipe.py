"""The skeleton every staged recipe shares: a config, a list of stages, and a report of what they made.

A recipe subclasses :class:`StagedRecipe` and says three things: its stages (:meth:`StagedRecipe.stages`, read top
to bottom like a torchtune recipe), the components whose weights it needs (:meth:`StagedRecipe.components`), and
its report (:meth:`StagedRecipe.write_report`, given the run's :class:`RunResult`). Running, resuming, locking the
run folder, the records that describe it, ``prefopt clean``, tiny models for demos and the requirement checks are
the skeleton's.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console

from prefopt.config import ComponentSpec, to_dict
from prefopt.distributed import main_first
from prefopt.errors import PrefoptError
from prefopt.hub import downloads
from prefopt.layout import LORA_WEIGHTS_NAME, RunLayout
from prefopt.runner import RECIPE_KEY, missing_component_weights
from prefopt.stages import RunResult, Stage, StageRunner, clean_run, run_directory_lock


def finished_lora(layout: RunLayout, stage: str) -> Path:
    """The LoRA of ``stage`` in the run's last configuration, refused unless that stage finished and was trained on
    the backbone of the run's ``config.json`` (the finished configuration, which `sample` and `push` load and
    describe the model with; a later attempt may have changed it)."""
    record = json.loads(layout.index.read_text()).get(stage, {})
    folder = layout.current(stage)
    if record.get("status") != "done":
        raise PrefoptError(f"stage `{stage}` of run `{layout.root}` has not finished (its last attempt is "
                           f"{record.get('status', 'missing')}); finish the run, or sample a LoRA file instead.")
    try:
        same = json.loads(folder.config.read_text())["backbone"] == json.loads(layout.config.read_text())["backbone"]
    except (OSError, ValueError, KeyError, TypeError):
        same = False
    if not same:
        raise PrefoptError(f"`{folder.path}` was trained on another backbone than the run's finished configuration "
                           f"(`{layout.config}`) names; finish the run with its last configuration first.")
    return folder.lora


class StagedRecipe(abc.ABC):
    """A recipe run as typed stages in ``<run.output_dir>/<run.name>/``."""

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config: Any):
        self.config = config
        self.layout = RunLayout.of(config.run)
        self.console = Console()

    # --- what a recipe says ---------------------------------------------------------------------------

    @abc.abstractmethod
    def stages(self) -> list[Stage]:
        """The stages, in order (building the list loads no model)."""

    @abc.abstractmethod
    def write_report(self, result: RunResult) -> Path:
        """Write the report of a finished run (main process) and return its index page."""

    def components(self) -> Sequence[ComponentSpec]:
        """The backbone and rewards whose weights the run needs."""
        return [self.config.backbone]

    def missing_inputs(self) -> list[str]:
        """Sentences naming inputs besides weights that are missing (reference photos, prompts)."""
        return []

    def config_problems(self) -> list[str]:
        """Sentences naming settings that cannot work, found from the config alone (``prefopt validate`` and before a
        run): a frame count the backbone cannot take, a model folder saved from another family."""
        from prefopt.plugins import get_registry

        spec = getattr(self.config, "backbone", None)
        if spec is None:
            return []
        cls = get_registry().get("backbones", spec.name).cls
        problems = [problem for problem in [cls.misconfigured(spec.options)] if problem]
        for section, frames in media_frame_counts(self.config):
            problem = cls.frame_count_problem(frames, spec.options)
            if problem:
                problems.append(f"`{section}.num_frames`: {problem}")
        return problems

    def check_inputs(self) -> None:
        """Open what the run will read (photos, data, prompts) before any work: one sentence when it cannot."""

    def result_loras(self, layout: RunLayout) -> list[Path]:
        """The LoRA files that, applied together, make the run's final model (``prefopt sample``): the trainer's
        `init_lora` when it has one, then the LoRA of the last stage that trained one."""
        index = json.loads(layout.index.read_text())
        trained = [name for name, record in index.items() if layout.stage(name, record["hash"]).lora.is_file()]
        if not trained:
            raise PrefoptError(f"run `{layout.root}` has no trained LoRA yet; run its recipe first.")
        initial = getattr(getattr(self.config, "trainer", None), "init_lora", None)
        if initial and Path(initial).is_dir():
            initial = Path(initial) / LORA_WEIGHTS_NAME
        return [*([Path(initial)] if initial else []), finished_lora(layout, trained[-1])]

    # --- the skeleton ---------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Side effects before the checks: tiny random models at the configured paths, when the run asks for them
        (demos and tests), built once on the main process."""
        if not getattr(self.config.run, "build_tiny_models", False):
            return
        from prefopt.tiny_models import save_tiny_models

        with main_first() as main:
            if main:
                self.console.print("[bold yellow]Building tiny randomly initialised models: their images and videos "
                                   "are noise; this run shows the mechanics of every stage, not results.[/bold yellow]")
                save_tiny_models(self.components(), seed=getattr(self.config.run, "seed", 0))

    def missing_weights(self) -> list[str]:
        """Sentences naming weights besides the components' that are missing (MagicID's prompt writer, CLIP)."""
        return []

    def missing_requirements(self) -> list[str]:
        """One sentence per missing weight or input; nothing is loaded."""
        with downloads(self.config.run.allow_downloads):
            return [*self.config_problems(), *self.missing_inputs(), *missing_component_weights(self.components()),
                    *self.missing_weights()]

    def run(self) -> Path:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        with downloads(self.config.run.allow_downloads), run_directory_lock(self.layout):
            # The recorded config names its recipe: `prefopt run` and `prefopt sample` read it back.
            runner = StageRunner(self.layout, self.console.print, config={RECIPE_KEY: self.name, **to_dict(self.config)})
            result = runner.run_all(self.stages())
            with main_first() as main:
                if main:
                    self.console.print(f"[bold]report:[/bold] {self.write_report(result)}")
            runner.finish()
        return self.layout.root

    def clean(self, dry_run: bool = False) -> list[Path]:
        """``prefopt clean``: remove stage folders of earlier configurations (only folders prefopt made)."""
        return clean_run(self.layout, self.stages(), dry_run)


def media_frame_counts(config: Any) -> list[tuple[str, int]]:
    """(section, frames) for every top-level section of a recipe config that sets ``num_frames`` (the trainer's,
    the sampling's, the evaluation's): the sizes a run will give its backbone."""
    import dataclasses

    counts = []
    for field in dataclasses.fields(config):
        section = getattr(config, field.name)
        frames = getattr(section, "num_frames", None) if dataclasses.is_dataclass(section) else None
        if isinstance(frames, int):
            counts.append((field.name, frames))
    return counts

"""Config parts every recipe shares: the run folder, named rewards, selector chains, sampling.

Option fields that name a reward or a source say so in their metadata (``"names": "reward"`` or ``"source"``), so
a misspelt one is caught here by ``prefopt validate``, whatever the selector or reward plugin is called.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from prefopt.config import SelectorSpec

# A run name is one plain folder name: never empty (the run dir would be `output_dir` itself), never a path.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# A reward name is used as a column, a file-name part and a selector option: a plain identifier.
REWARD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
#: The field metadata key that marks an option naming rewards or sources.
NAMES = "names"


@dataclass
class RunConfig:
    """Where a run's folder is, and what it may do before it starts."""

    name: str = field(default="run", metadata={"help": "Run name; outputs go to `<output_dir>/<name>/`."})
    output_dir: str = field(default="runs", metadata={"help": "Parent folder of run directories."})
    build_tiny_models: bool = field(
        default=False,
        metadata={"help": "Build tiny random models at the configured paths first (the backbone's, and those of "
                          "rewards that have one): tests and demos, their media are noise."})
    allow_downloads: bool = field(
        default=False,
        metadata={"help": "Let loaders fetch missing weights (and hub datasets) from the Hugging Face hub; off: "
                          "every model must be a local directory or already in the cache, and nothing is fetched."})

    def __post_init__(self) -> None:
        if not RUN_NAME.fullmatch(self.name):
            raise ValueError(f"`name` must be a plain folder name (letters, digits, `.`, `_`, `-`, not starting with "
                             f"`.`), got `{self.name}`")
        if not self.output_dir:
            raise ValueError("`output_dir` must not be empty (use `.` for the current folder)")


@dataclass
class SeededRunConfig(RunConfig):
    """A run that samples media: its seed decides which."""

    seed: int = field(default=0, metadata={"help": "Base seed for generation (each video adds its index)."})


def require_at_least(owner: object, names: Sequence[str], minimum: int = 1) -> None:
    for name in names:
        value = getattr(owner, name)
        if value < minimum:
            raise ValueError(f"`{name}` must be at least {minimum}, got {value}")


def refuse_set(options: object, path: str, names: Sequence[str], reason: str) -> None:
    """Options a recipe decides itself must stay unset: set, they would silently do nothing."""
    for name in names:
        if getattr(options, name) is not None:
            raise ValueError(f"`{path}.{name}` cannot be set in this recipe ({reason}); remove it.")


def check_reward_names(rewards: Sequence[str]) -> None:
    bad = [name for name in rewards if not REWARD_NAME.fullmatch(str(name))]
    if bad:
        raise ValueError(f"reward name `{bad[0]}` must be a plain identifier (letters, digits, `_`, `-`).")


def check_selector_names(spec: SelectorSpec, path: str, rewards: Sequence[str], sources: Sequence[str]) -> None:
    """Selector options that name rewards or sources (marked in their metadata) must name this run's, so a misspelt
    one is a config error here rather than a failure after hours of generation."""
    options = spec.options
    if not dataclasses.is_dataclass(options):
        return  # options not parsed yet (no registry): the registry's own check runs later
    for f in dataclasses.fields(options):
        kind = f.metadata.get(NAMES)
        if kind is None:
            continue
        value = getattr(options, f.name)
        allowed = rewards if kind == "reward" else sources
        wrong = [v for v in (value if isinstance(value, list) else [value]) if v is not None and v not in allowed]
        if wrong:
            choices = ", ".join(allowed) or "nothing (leave it empty)"
            raise ValueError(f"`{path}.{f.name}` names `{wrong[0]}`, which is not one of {choices}")


def check_selector_chain(selectors: Sequence[SelectorSpec], path: str) -> None:
    """A chain starts with a selector that makes pairs; every later one filters the pairs before it (as each
    selector declares in its `roles`)."""
    from prefopt.interfaces import FILTERS_PAIRS, MAKES_PAIRS
    from prefopt.plugins import get_registry

    if not selectors:
        raise ValueError(f"`{path}` is empty: name at least one selector, e.g. `[{{name: pareto}}]`")
    for index, spec in enumerate(selectors):
        roles = get_registry().get("pair_selectors", spec.name).cls.roles
        if index == 0 and MAKES_PAIRS not in roles:
            raise ValueError(f"`{path}.0`: selector `{spec.name}` only filters pairs, so it cannot start the chain; "
                             "put a selector that makes pairs (e.g. `pareto`, `threshold`) before it.")
        if index > 0 and FILTERS_PAIRS not in roles:
            raise ValueError(f"`{path}.{index}`: selector `{spec.name}` only makes pairs, so it can only start the "
                             "chain.")


@dataclass
class SamplingConfig:
    """How media are sampled: size, sampler steps, guidance, batch, and the frame rate of written videos."""

    num_frames: int | None = field(default=None, metadata={"min": 1, "help": "Frames per sample; empty: the "
                                                                          "backbone's default."})
    height: int | None = field(default=None, metadata={"min": 1, "help": "Sample height; empty: the backbone's."})
    width: int | None = field(default=None, metadata={"min": 1, "help": "Sample width; empty: the backbone's."})
    num_inference_steps: int = field(default=30, metadata={"min": 1, "help": "Sampling steps."})
    guidance_scale: float = field(default=5.0, metadata={"help": "Classifier-free (or embedded) guidance."})
    fps: int = field(default=8, metadata={"min": 1, "help": "Frame rate of written videos (and for motion rewards)."})
    batch_size: int = field(default=1, metadata={"min": 1, "help": "Samples per pipeline call."})

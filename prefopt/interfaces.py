"""The core interfaces and the typed records that flow between them.

Small interfaces (Reward, PairSelector, Recipe) are Protocols: any class with the right attributes
works. The wide Backbone is an ABC, so a subclass that misses a method fails when it is built, not an
hour into a run.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardScore:
    """One reward's verdict on one video: ``value`` on the 1–10 scale, ``raw`` in the declared range."""

    value: float
    raw: float
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredItems:
    """A column view of scored media, for vectorised pair selection.

    ``scores`` maps reward name → float array (1–10 scale), all arrays of the same length as ``ids``.
    """

    ids: np.ndarray
    sources: np.ndarray
    prompts: np.ndarray
    scores: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name, column in [("sources", self.sources), ("prompts", self.prompts), *self.scores.items()]:
            if len(column) != n:
                raise ValueError(f"column `{name}` has {len(column)} entries, expected {n} (one per id).")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> ScoredItems:
        return ScoredItems(
            ids=self.ids[mask],
            sources=self.sources[mask],
            prompts=self.prompts[mask],
            scores={k: v[mask] for k, v in self.scores.items()},
        )


@dataclass(frozen=True)
class Pair:
    """A preference pair: ``winner_id`` is preferred over ``loser_id`` for ``prompt``."""

    winner_id: str
    loser_id: str
    prompt: str
    weight: float = 1.0
    selector: str = ""
    deltas: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PairIndices:
    """Pairs as index arrays into a :class:`ScoredItems` (vectorised form used by selectors)."""

    winners: np.ndarray
    losers: np.ndarray
    weights: np.ndarray

    @classmethod
    def empty(cls) -> PairIndices:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))

    def __len__(self) -> int:
        return len(self.winners)

    def take(self, keep: np.ndarray) -> PairIndices:
        return PairIndices(self.winners[keep], self.losers[keep], self.weights[keep])


@dataclass
class BackboneOutput:
    """What the objective needs from one denoiser call on a batch.

    ``prediction`` and ``target`` have the latents' shape; ``weights`` is per sample, shape ``[B]``
    (e.g. a timestep-dependent loss weighting; ones when the backbone has none).
    """

    prediction: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor


@dataclass
class GeneratedMedia:
    """A generated video (``frames``: uint8 ``[F, H, W, 3]``) with the latents it decoded from."""

    frames: np.ndarray
    latents: torch.Tensor | None
    prompt: str
    seed: int


# ----------------------------------------------------------------------------------------------------
# Interfaces
# ----------------------------------------------------------------------------------------------------


# What a reward can be asked for besides its score, declared in its optional ``measures`` class attribute.
# Evaluation computes a metric with whichever reward declares it, first-party or not:
#: ``embed_largest_face(image)``, ``similarity(embeddings, reference)``, ``reference_embedding(photos)`` (Face Sim).
FACE_EMBEDDING = "face_embedding"
#: scores whose metadata has VBench's ``per_pair_top5`` flow magnitudes and ``vbench_dynamic`` (Dynamic Degree).
OPTICAL_FLOW = "optical_flow"
#: ``image_features(frames)`` (unit-norm CLIP), ``config.frames``, and a raw score that is CLIP-T (CLIP metrics).
CLIP_FEATURES = "clip_features"


def measures(reward: Any, capability: str) -> bool:
    """Whether ``reward`` declares ``capability`` (one of the constants above) in its ``measures``."""
    return capability in getattr(reward, "measures", ())


@runtime_checkable
class Reward(Protocol):
    """Scores a batch of videos. ``raw_range`` is the declared range of the raw score. A reward may also declare
    ``measures`` (a frozenset of ``FACE_EMBEDDING``, ``OPTICAL_FLOW``, ``CLIP_FEATURES``) for evaluation metrics."""

    name: ClassVar[str]
    raw_range: tuple[float, float]

    def score(
        self,
        videos: Sequence[np.ndarray],
        prompts: Sequence[str],
        references: Sequence[np.ndarray],
    ) -> list[RewardScore]:
        """One score per video. Videos are uint8 ``[F, H, W, 3]``; references uint8 ``[H, W, 3]``."""
        ...

    def provenance(self) -> dict[str, Any]:
        """The model identity (name, checkpoint, version) recorded with every score."""
        ...


#: A selector's roles in a chain: it makes pairs from scored items, or keeps some of an earlier selector's pairs.
MAKES_PAIRS, FILTERS_PAIRS = "make", "filter"


@runtime_checkable
class PairSelector(Protocol):
    """Turns scored items into preference pairs, or filters pairs from an earlier selector in a chain. ``roles``
    declares which it can do (``MAKES_PAIRS``, ``FILTERS_PAIRS`` or both): a chain starts with a maker, and
    ``prefopt validate`` checks that."""

    name: ClassVar[str]
    roles: ClassVar[frozenset[str]]

    def select(self, items: ScoredItems, candidates: PairIndices | None = None) -> PairIndices:
        """Pairs (winner, loser, weight) as indices into ``items``; with ``candidates``, a subset of them."""
        ...


@runtime_checkable
class Recipe(Protocol):
    """A whole method (e.g. MagicID) run from one config."""

    name: ClassVar[str]

    def prepare(self) -> None:
        """Side effects before the checks (tiny demo models at the configured paths); nothing when not asked."""
        ...

    def missing_requirements(self) -> list[str]:
        """Sentences naming what the run needs and does not have (weights, inputs); empty when ready. Loads and
        writes nothing."""
        ...

    def check_inputs(self) -> None:
        """Open what the run will read (photos, data, prompts) and raise one sentence when something cannot be
        used, before any expensive work."""
        ...

    def run(self) -> Path:
        """Run every stage and return the run directory."""
        ...

    def clean(self, dry_run: bool = False) -> list[Path]:
        """Remove (or list) the stage folders of superseded configurations; return them."""
        ...


# ----------------------------------------------------------------------------------------------------
# Abilities: what a component may offer besides the members its kind requires. A component has one by
# implementing its members; the registry checks their form at registration, and prefopt asks
# `isinstance`/`issubclass` against these protocols, never `hasattr`.
# ----------------------------------------------------------------------------------------------------


@runtime_checkable
class ChecksWeights(Protocol):
    """A component (reward, backbone) that can say, without loading anything, which of its weights are missing."""

    @classmethod
    def missing_weights(cls, config: Any) -> str | None:
        """One sentence naming the missing weights and how to get them, or None when they are there."""
        ...


@runtime_checkable
class ChecksPrompts(Protocol):
    """A reward that scores only some prompts (the miniature action reward needs an action in each)."""

    @classmethod
    def check_prompts(cls, config: Any, prompts: Sequence[str]) -> None:
        """Raise one sentence naming the first prompt it cannot score."""
        ...


@runtime_checkable
class ChecksReferences(Protocol):
    """A reward that compares with reference photos and can tell, before any work, that one will not do."""

    def check_references(self, references: Sequence[np.ndarray]) -> None:
        """Raise one sentence naming the first unusable reference photo (e.g. no face found in it)."""
        ...


@runtime_checkable
class BuildsTinyModel(Protocol):
    """A reward with a tiny randomly initialised model for tests and demos (`run.build_tiny_models`)."""

    @classmethod
    def save_tiny_model(cls, config: Any, seed: int) -> None:
        """Save the tiny model where ``config`` points, unless one is there."""
        ...


@runtime_checkable
class ShowsFrontiers(Protocol):
    """A selector whose pairs join an upper and a lower frontier, which the selection plot marks."""

    def frontiers(self, items: ScoredItems) -> tuple[np.ndarray, np.ndarray]:
        """(upper, lower) frontier item indices."""
        ...


@runtime_checkable
class ReselectsPairs(Protocol):
    """A recipe whose pair selection can run again on a finished run's scored repository (`prefopt select`)."""

    def select_pairs(self, stage: str = "all") -> None:
        """Select again, into `<stage>-reselect/`."""
        ...


@runtime_checkable
class HasResultLoras(Protocol):
    """A recipe that says which LoRA files, applied in order, make a finished run's final model (`prefopt sample`)."""

    def result_loras(self, layout: Any) -> list[Path]:
        """The LoRA files of the run in ``layout`` (a :class:`prefopt.layout.RunLayout`)."""
        ...


#: The abilities each kind of component may have (`prefopt plugins` shows them).
ABILITIES: dict[str, tuple[type, ...]] = {
    "rewards": (ChecksWeights, ChecksPrompts, ChecksReferences, BuildsTinyModel),
    "pair_selectors": (ShowsFrontiers,),
    "backbones": (ChecksWeights,),
    "recipes": (ReselectsPairs, HasResultLoras),
}
#: The methods each `measures` entry of a reward promises (see FACE_EMBEDDING, OPTICAL_FLOW, CLIP_FEATURES).
MEASURE_METHODS = {FACE_EMBEDDING: ("embed_largest_face", "similarity", "reference_embedding"),
                   OPTICAL_FLOW: (), CLIP_FEATURES: ("image_features",)}


class Backbone(abc.ABC):
    """A diffusion model that prefopt can train and sample from.

    The backbone turns media and prompts into training inputs and returns what the loss needs; the
    trainer owns the objective, so one trainer serves flow-matching and ε/v-prediction models alike.
    Everything the core reads from a backbone is declared here; the registry checks that a registered
    class has every abstract member and a dataclass ``Config``.
    """

    name: ClassVar[str]
    #: The options dataclass; the backbone is built as ``cls(Config(...))`` and keeps it as ``self.config``.
    Config: ClassVar[type]
    config: Any
    #: "flow" (velocity target ε − x₀), "epsilon" or "v_prediction".
    prediction_type: str
    #: Module names that LoRA adapts by default.
    default_lora_targets: ClassVar[tuple[str, ...]] = ("to_q", "to_k", "to_v", "to_out.0")
    #: The prefix of the denoiser's keys in a diffusers LoRA file (``transformer`` or ``unet``).
    denoiser_attribute: ClassVar[str] = "transformer"
    #: "image" backbones take one frame; "video" backbones take ``frame_multiple·k + 1`` frames.
    media: ClassVar[Literal["image", "video"]] = "video"
    frame_multiple: ClassVar[int | None] = None
    #: Media size when a config leaves it unset: (frames, height, width).
    default_num_frames: ClassVar[int] = 33
    default_resolution: ClassVar[tuple[int, int]] = (320, 512)
    #: The family's tiny random pipeline (tests, demos, `run.build_tiny_models`): the (frames, height, width) its
    #: media take and the options it needs; None when the family has none.
    tiny_media_size: ClassVar[tuple[int, int, int] | None] = None
    tiny_options: ClassVar[dict[str, Any]] = {}

    @classmethod
    def tiny_pipeline(cls, seed: int = 0) -> Any:
        """A tiny randomly initialised pipeline of this family, built from configs (nothing downloaded)."""
        from prefopt.errors import PrefoptError

        raise PrefoptError(f"backbone `{cls.name}` has no tiny random version; set `run.build_tiny_models: false` "
                           "and point the backbone at real weights.")

    def check_media_size(self, num_frames: int, height: int, width: int) -> None:
        """Raise one sentence when media of this size cannot go through the model."""
        from prefopt.errors import MediaSizeError

        problem = self.frame_count_problem(num_frames)
        if problem:
            raise MediaSizeError(problem)

    @classmethod
    def frame_count_problem(cls, num_frames: int, config: Any = None) -> str | None:
        """The sentence saying why ``num_frames`` cannot go through the model (with these options, when given), or
        None; without loading the model, so ``prefopt validate`` checks it."""
        if cls.media == "image" and num_frames != 1:
            return f"backbone `{cls.name}` makes images: `num_frames` must be 1, got {num_frames}."
        multiple = cls.frame_multiple
        if cls.media == "video" and multiple and (num_frames - 1) % multiple:
            return f"backbone `{cls.name}` takes {multiple}·k + 1 frames (e.g. {multiple * 4 + 1}), got {num_frames}."
        return None

    @classmethod
    def misconfigured(cls, config: Any) -> str | None:
        """A sentence naming options that cannot work with this family (checked by ``prefopt validate`` and before a
        run starts, without loading anything), or None."""
        return None

    @abc.abstractmethod
    def to(self, device: torch.device | str) -> Backbone:
        """Move every module to ``device`` (the trainer calls it with the accelerator's device); return self."""

    @property
    @abc.abstractmethod
    def denoiser(self) -> torch.nn.Module:
        """The network that LoRA adapts: a diffusers ModelMixin (peft adapters, gradient checkpointing)."""

    @abc.abstractmethod
    def encode_prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Text conditioning for a batch of prompts, as a dict of tensors with batch first."""

    @abc.abstractmethod
    def encode_media(self, pixels: torch.Tensor) -> torch.Tensor:
        """Latents for media in [-1, 1], shape ``[B, C, F, H, W]`` (images have F = 1)."""

    @abc.abstractmethod
    def sample_timesteps(self, batch_size: int, generator: torch.Generator | None = None, *,
                         latent_shape: Sequence[int] | None = None) -> torch.Tensor:
        """Training timesteps for a batch (σ in (0, 1) for flow models, integer steps otherwise); the trainer
        passes the batch's ``latent_shape`` for models whose schedule depends on the media size."""

    @abc.abstractmethod
    def forward_train(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        conditioning: dict[str, torch.Tensor],
        denoiser: torch.nn.Module | None = None,
    ) -> BackboneOutput:
        """Noise the latents at ``timesteps``, run the denoiser, and return prediction and target.

        ``denoiser`` overrides :attr:`denoiser` (the trainer passes its distributed wrapper).
        """

    @abc.abstractmethod
    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        *,
        num_frames: int,
        height: int,
        width: int,
        num_inference_steps: int,
        guidance_scale: float,
    ) -> list[GeneratedMedia]:
        """Sample media (with their latents) for prompts with the current weights."""

    @abc.abstractmethod
    def save_lora(self, directory: Path, state_dict: dict[str, torch.Tensor], adapter_config: dict | None = None) -> Path:
        """Write a LoRA state dict in the pipeline's own format (``pytorch_lora_weights.safetensors``), with the
        adapter's peft config (``LoraConfig.to_dict()``: rank, α, targets) where the format keeps it."""

    @abc.abstractmethod
    def use_loras(self, paths: Sequence[Path]) -> None:
        """Sample with exactly these LoRA files (diffusers format) active; an empty list means the base model."""

    @classmethod
    def missing_weights(cls, config: Any) -> str | None:
        """A sentence naming the weights ``config`` points to that are missing and how to get them, or None;
        checked before a run starts, without loading anything."""
        return None

    def cache_key(self) -> str:
        """What cached text embeddings and latents depend on besides the input: the model and its options."""
        from prefopt.config import to_dict

        options = {k: v for k, v in to_dict(self.config).items() if k != "device"}
        return f"{self.name}:{sorted(options.items())}"

    @abc.abstractmethod
    def unload_encoders(self) -> None:
        """Free the text encoders and VAE (training from a cache needs only the denoiser)."""

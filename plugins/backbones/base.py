"""Shared machinery for backbones built on a diffusers pipeline.

Subclasses say which pipeline class to load, how to encode prompts, and how to call their denoiser;
this module loads weights (with one clear sentence when they are missing), encodes media with the VAE,
samples media with their latents, saves LoRA weights in the pipeline's own format, and implements the
flow-matching training inputs shared by HunyuanVideo and Wan.
"""

from __future__ import annotations

import abc
import gc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from prefopt.errors import MissingWeightsError
from prefopt.hub import pretrained_kwargs
from prefopt.interfaces import Backbone, BackboneOutput, GeneratedMedia

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


@dataclass
class DiffusersBackboneConfig:
    """Options every diffusers-based backbone shares."""

    pretrained: str = field(
        default="", metadata={"help": "Hub id or local directory of the pipeline in diffusers format."}
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    dtype: Literal["float32", "bfloat16", "float16", "float64"] = field(
        default="bfloat16",
        metadata={"help": "Weight dtype of the frozen model (LoRA weights stay float32); float64 for numerical checks."},
    )
    device: str = field(default="auto", metadata={"help": "`auto` (CUDA when present), `cpu` or `cuda:N`."})


@dataclass
class FlowMatchingConfig(DiffusersBackboneConfig):
    """Options of flow-matching backbones: how training timesteps are drawn and weighted."""

    timestep_sampling: Literal["logit_normal", "uniform", "mode"] = field(
        default="logit_normal",
        metadata={"help": "Density of training σ before the shift, as in diffusers' flow-matching trainers."},
    )
    shift: float | None = field(
        default=None,
        metadata={"help": "σ shift of the training grid, σ' = sσ/(1+(s−1)σ); empty reads the pipeline's scheduler "
                          "(`shift`, or `flow_shift` for Wan's schedulers): 7 for HunyuanVideo, 3–5 for Wan. Lower "
                          "it (e.g. 3, as musubi-tuner advises) to train more at small σ, where fine detail such "
                          "as a face forms; 1 trains on the unshifted grid (finetrainers)."},
    )
    logit_mean: float = field(default=0.0, metadata={"help": "Mean of the logit-normal σ density."})
    logit_std: float = field(default=1.0, metadata={"help": "Std of the logit-normal σ density."})
    mode_scale: float = field(default=1.29, metadata={"help": "Scale of the `mode` σ density."})
    loss_weighting: Literal["none", "sigma_sqrt", "cosmap"] = field(
        default="none", metadata={"help": "Per-sample loss weight as a function of σ (SD3 schemes)."}
    )

    def __post_init__(self) -> None:
        if self.shift is not None and self.shift <= 0:
            raise ValueError(f"`shift` must be positive, got {self.shift}")
        if self.logit_std <= 0:
            raise ValueError(f"`logit_std` must be positive, got {self.logit_std}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class DiffusersBackbone(Backbone):
    """A Backbone around a diffusers pipeline; subclasses set the pipeline and denoiser specifics."""

    pipeline_class_name: ClassVar[str]
    denoiser_attribute: ClassVar[str] = "transformer"
    model_label: ClassVar[str]
    download_hint: ClassVar[str]
    encoder_attributes: ClassVar[tuple[str, ...]] = ("text_encoder", "vae")

    def __init__(self, config: DiffusersBackboneConfig, pipeline: Any | None = None):
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = DTYPES[config.dtype]
        self.pipe = pipeline if pipeline is not None else self._load_pipeline()
        # A pipeline saved without a VAE (`vae: [null, null]` in model_index.json) denoises pixels: media are
        # their own latents, scaled to [-1, 1] (the miniature world's model is such a pixel-space model).
        self.pixel_space = getattr(self.pipe, "vae", ...) is None
        if self.pixel_space:
            self.pipe.vae_scale_factor_spatial = self.pipe.vae_scale_factor_temporal = 1
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)  # prefopt shows one bar per generation job instead
        self.denoiser.requires_grad_(False)

    # --- loading ---------------------------------------------------------------------------------

    @classmethod
    def pipeline_class(cls) -> type:
        import diffusers

        return getattr(diffusers, cls.pipeline_class_name)

    @classmethod
    def missing_weights(cls, config: DiffusersBackboneConfig) -> str | None:
        """Checked before a run starts, without loading anything."""
        return missing_weights_message(config, cls.model_label, cls.download_hint)

    def _load_pipeline(self) -> Any:
        message = missing_weights_message(self.config, self.model_label, self.download_hint)
        if message:
            raise MissingWeightsError(message)
        try:
            return self.pipeline_class().from_pretrained(
                self.config.pretrained, revision=self.config.revision, dtype=self.dtype, **pretrained_kwargs(),
                **_saved_without(self.config),
            )
        except OSError as e:
            raise MissingWeightsError(
                f"{self.model_label} weights at `{self.config.pretrained}` could not be loaded ({e}). "
                f"{self.download_hint}"
            ) from e

    # --- Backbone interface shared by every diffusers pipeline -------------------------------------

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.denoiser_attribute)

    def to(self, device: torch.device | str) -> DiffusersBackbone:
        self.device = torch.device(device)
        self.pipe.to(self.device)
        return self

    @torch.no_grad()
    def encode_media(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.pixel_space:
            return pixels.to(self.device).float()
        vae = self._require("vae")
        pixels = pixels.to(self.device, vae.dtype)
        latents = vae.encode(self._vae_input(pixels)).latent_dist.mode()
        return self._normalize_latents(latents).float()

    def unload_encoders(self) -> None:
        for name in self.encoder_attributes:
            if getattr(self.pipe, name, None) is not None:
                setattr(self.pipe, name, None)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def save_lora(self, directory: Path, state_dict: dict[str, torch.Tensor], adapter_config: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # The adapter's peft config (rank, α, targets) goes into the file's metadata, where diffusers'
        # load_lora_weights reads it: without it a LoRA with α ≠ r comes back at scale 1 instead of α/r.
        layers = {f"{self.denoiser_attribute}_lora_layers": state_dict,
                  f"{self.denoiser_attribute}_lora_adapter_metadata": adapter_config}
        self.pipeline_class().save_lora_weights(directory, **layers, safe_serialization=True)
        return directory / "pytorch_lora_weights.safetensors"

    @torch.no_grad()
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
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        latents = self._sample_latents(
            list(prompts), generators, num_frames=num_frames, height=height, width=width,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
        )
        frames = self.decode_latents(latents)
        return [
            GeneratedMedia(frames=f, latents=latent.cpu(), prompt=p, seed=int(s))
            for f, latent, p, s in zip(frames, self._normalized_for_training(latents), prompts, seeds)
        ]

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 frames ``[B, F, H, W, 3]`` from pipeline latents."""
        if self.pixel_space:
            video = latents.to(self.device)
        else:
            vae = self._require("vae")
            video = vae.decode(self._denormalize_latents(latents.to(self.device, vae.dtype)), return_dict=False)[0]
            video = self._vae_output(video)  # [B, C, F, H, W] in [-1, 1]
        video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return video.permute(0, 2, 3, 4, 1).cpu().numpy()

    # --- hooks for subclasses ---------------------------------------------------------------------

    def _vae_input(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def _vae_output(self, video: torch.Tensor) -> torch.Tensor:
        return video

    def _normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.pipe.vae.config.scaling_factor

    def _denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents / self.pipe.vae.config.scaling_factor

    def _normalized_for_training(self, latents: torch.Tensor) -> torch.Tensor:
        """Pipeline latents (output_type="latent") are already in the training space."""
        return latents

    @abc.abstractmethod
    def _sample_latents(self, prompts, generators, **kwargs) -> torch.Tensor:
        """Run the pipeline to its final latents (``output_type="latent"``)."""

    def _require(self, name: str) -> Any:
        module = getattr(self.pipe, name, None)
        if module is None:
            raise RuntimeError(
                f"the {name} of backbone `{self.name}` was unloaded to save memory; encode media and "
                "prompts before training starts, or build a new backbone."
            )
        return module


def _saved_without(config: DiffusersBackboneConfig) -> dict[str, None]:
    """Components the saved pipeline has as `[null, null]` (e.g. no VAE: a pixel-space model). diffusers'
    from_pretrained refuses to leave out a component its pipeline class declares unless it is passed as None."""
    import json

    from prefopt.hub import local_directory

    root = local_directory(config.pretrained, "model_index.json", config.revision)
    if root is None:
        return {}
    index = json.loads((root / "model_index.json").read_text())
    return {name: None for name, spec in index.items()
            if not name.startswith("_") and isinstance(spec, list) and spec[0] is None}


def missing_weights_message(config: DiffusersBackboneConfig, label: str, hint: str) -> str | None:
    """One sentence saying which weights (or which of their files) are missing and how to provide them, or None."""
    from prefopt.hub import missing_weights_message as message

    return message(config.pretrained, label, "model_index.json", "`backbone.options.pretrained`", config.revision,
                   how=hint)


def scheduler_shift(scheduler_config) -> float:
    """The static σ shift a flow-matching scheduler samples with. diffusers' FlowMatchEulerDiscreteScheduler
    calls it `shift`; the UniPC and DPM-Solver schedulers Wan ships with call it `flow_shift` (and have no
    `shift`, so reading only `shift` would silently train Wan on the unshifted grid)."""
    for key in ("flow_shift", "shift"):
        value = scheduler_config.get(key)
        if value is not None:
            return float(value)
    return 1.0


class FlowMatchingBackbone(DiffusersBackbone):
    """Rectified-flow training inputs: x_σ = (1 − σ)·x₀ + σ·ε, target ε − x₀, model timestep 1000·σ."""

    prediction_type = "flow"

    def sample_timesteps(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """σ drawn from the configured density, snapped to the scheduler's (shifted) training grid."""
        from diffusers.training_utils import compute_density_for_timestep_sampling

        config = self.config
        u = compute_density_for_timestep_sampling(
            weighting_scheme=config.timestep_sampling, batch_size=batch_size, logit_mean=config.logit_mean,
            logit_std=config.logit_std, mode_scale=config.mode_scale, generator=generator,
        )
        sigmas = self._training_sigmas()
        indices = (u * len(sigmas)).long().clamp(0, len(sigmas) - 1)
        return sigmas[indices]

    def _training_sigmas(self) -> torch.Tensor:
        """The scheduler's training grid σ_i = i/N with its static shift (computed, not read from the
        scheduler, whose ``sigmas`` are overwritten by every sampling call)."""
        scheduler_config = self.pipe.scheduler.config
        num = int(scheduler_config.num_train_timesteps)
        shift = self.config.shift if self.config.shift is not None else scheduler_shift(scheduler_config)
        sigmas = torch.linspace(1.0, 1.0 / num, num, dtype=torch.float64).flip(0)
        return (shift * sigmas / (1.0 + (shift - 1.0) * sigmas)).float()

    def forward_train(self, latents, noise, timesteps, conditioning, denoiser=None) -> BackboneOutput:
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        sigmas = timesteps.to(latents.device, torch.float32).view(-1, *([1] * (latents.ndim - 1)))
        noisy = (1.0 - sigmas) * latents + sigmas * noise
        model = denoiser if denoiser is not None else self.denoiser
        prediction = self._predict(model, noisy, timesteps * 1000.0, conditioning)
        weights = compute_loss_weighting_for_sd3(self.config.loss_weighting, timesteps.float()).to(latents.device)
        return BackboneOutput(prediction=prediction, target=noise - latents, weights=weights.reshape(-1))

    @abc.abstractmethod
    def _predict(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        """Call the denoiser on noised latents with the model's own timestep convention."""

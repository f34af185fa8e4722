"""Shared machinery for backbones built on a diffusers pipeline.

Subclasses say which pipeline class to load, how to encode prompts, and how to call their denoiser;
this module loads weights (with one clear sentence when they are missing), encodes media with the VAE,
samples media with their latents, saves LoRA weights in the pipeline's own format, and implements the
flow-matching training inputs shared by HunyuanVideo and Wan.
"""

from __future__ import annotations

import abc
import gc
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from prefopt.errors import MediaSizeError, MissingWeightsError
from prefopt.hub import pretrained_kwargs
from prefopt.interfaces import Backbone, BackboneOutput, GeneratedMedia
from prefopt.layout import LORA_WEIGHTS_NAME
from prefopt.model_folders import missing_weights_message, saved_without

logger = logging.getLogger("prefopt")
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

    @property
    def pretrained_path(self) -> str:
        """`pretrained` as loaders take it: ``package://…`` (a model shipped inside a package, as the miniature
        world's) resolved to its folder; kept as written in the config, so the run's hashes do not depend on
        where the package is installed."""
        if self.pretrained.startswith("package://"):
            from prefopt.hub import resolve_path

            return str(resolve_path(self.pretrained))
        return self.pretrained


@dataclass
class FlowMatchingConfig(DiffusersBackboneConfig):
    """Options of flow-matching backbones: how training timesteps are drawn and weighted."""

    timestep_sampling: Literal["logit_normal", "uniform", "mode"] = field(
        default="logit_normal",
        metadata={"help": "Density of training σ before the shift, as in diffusers' flow-matching trainers."},
    )
    shift: float | None = field(
        default=None,
        metadata={"help": "σ shift of the training grid, σ' = sσ/(1+(s−1)σ). Empty: the pipeline scheduler's static "
                          "shift (`shift`, or `flow_shift` for Wan's schedulers: 7 for HunyuanVideo, 3–5 for Wan); "
                          "for schedulers that shift by the media size (FLUX, LTX-Video) 1, the unshifted grid that "
                          "diffusers' FLUX trainer and finetrainers' LTX trainer train on, unless `dynamic_shift`. "
                          "Lower it (e.g. 3, as musubi-tuner advises) to train more at small σ, where fine detail "
                          "such as a face forms."},
    )
    dynamic_shift: bool = field(
        default=False,
        metadata={"help": "FLUX, LTX-Video: train on the shift sampling uses, e^μ with μ linear in the token count, "
                          "capped at the scheduler's `max_shift` (with a warning): past it the line has no bound "
                          "(LTX-Video: 277 at 121×704×1280, where no training σ falls below 0.22)."},
    )
    logit_mean: float = field(default=0.0, metadata={"help": "Mean of the logit-normal σ density."})
    logit_std: float = field(default=1.0, metadata={"above": 0, "help": "Std of the logit-normal σ density."})
    mode_scale: float = field(default=1.29, metadata={"min": 0, "help": "Scale of the `mode` σ density."})
    loss_weighting: Literal["none", "sigma_sqrt", "cosmap"] = field(
        default="none", metadata={"help": "Per-sample loss weight as a function of σ (SD3 schemes)."}
    )
    precondition_outputs: bool = field(
        default=False,
        metadata={"help": "Compare x₀ = x_σ − σv with the clean latents, as diffusers' SD3 LoRA trainer does by "
                          "default: the same as weighting each sample's velocity error by σ², which in DPO acts as a "
                          "β that shrinks with σ. Off: plain velocity errors, for which prefopt's β is stated "
                          "(docs/losses.md)."},
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
    def has_lora_loader(cls) -> bool:
        """Whether diffusers has a LoRA loader for the pipeline (``load_lora_weights``/``save_lora_weights``);
        without one, prefopt writes the same file format itself and loads it onto the denoiser through peft."""
        return hasattr(cls.pipeline_class(), "load_lora_weights")

    @classmethod
    def missing_weights(cls, config: DiffusersBackboneConfig) -> str | None:
        """Checked before a run starts, without loading anything."""
        return missing_weights_message(config, cls.model_label, cls.download_hint)

    @classmethod
    def misconfigured(cls, config: DiffusersBackboneConfig) -> str | None:
        """A local model folder saved from another family's pipeline (read from its model_index.json)."""
        from prefopt.model_folders import other_family_message

        return other_family_message(config, cls.name, cls.pipeline_class_name, cls.model_label)

    @classmethod
    def frame_count_problem(cls, num_frames: int, config: DiffusersBackboneConfig | None = None) -> str | None:
        from prefopt.model_folders import has_vae

        if config is not None and cls.media == "video" and has_vae(config) is not True:
            return None  # saved without a VAE (pixel space: any count), or unknown: the weights check speaks
        return super().frame_count_problem(num_frames, config)

    def _load_pipeline(self) -> Any:
        message = missing_weights_message(self.config, self.model_label, self.download_hint)
        if message:
            raise MissingWeightsError(message)
        try:
            return self.pipeline_class().from_pretrained(
                self.config.pretrained_path, revision=self.config.revision, dtype=self.dtype, **pretrained_kwargs(),
                **saved_without(self.config),
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
        latents = self._vae_encode(self._to_vae_layout(pixels))
        return self._from_vae_layout(self._normalize_latents(latents)).float()

    def _vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised latents of pixels in the VAE's layout: the mode of a KL VAE's posterior (``latent_dist``),
        or the deterministic latents of an autoencoder without one (Sana's DC-AE returns ``latent``). Override it
        for other encoders (a VQ model's pre-quantisation latents, an encoder that needs extra inputs)."""
        output = self.pipe.vae.encode(pixels)
        if hasattr(output, "latent_dist"):
            return output.latent_dist.mode()
        if isinstance(getattr(output, "latent", None), torch.Tensor):
            return output.latent
        raise TypeError(f"backbone `{self.name}`: the VAE's encode returned {type(output).__name__}, which has "
                        "neither `latent_dist` nor `latent`; override `_vae_encode` to return its latents.")

    #: Extra spatial factor of the denoiser's input beyond its patch size (FLUX packs 2×2 latents into a token).
    latent_packing: ClassVar[int] = 1

    @property
    def spatial_multiple(self) -> int:
        """Heights and widths must be multiples of this: the VAE's downsampling × the denoiser's patch (for a
        UNet, its downsampling) × any packing."""
        pipe, config = self.pipe, self.denoiser.config
        names = ("vae_scale_factor_spatial", "vae_spatial_compression_ratio", "vae_scale_factor")
        vae = next((getattr(pipe, n) for n in names if isinstance(getattr(pipe, n, None), int)), 8)
        if "down_block_types" in config:  # a UNet halves the latents once per down block but the last
            patch = 2 ** (len(config.down_block_types) - 1)
        else:
            patch = config.get("patch_size") or 1
            patch = patch[-1] if isinstance(patch, (list, tuple)) else patch
        return int(vae * patch * self.latent_packing)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The shape ``[C, F, h, w]`` one sample of this size has in the training layout (without encoding one)."""
        if self.pixel_space:
            return (3, num_frames, height, width)
        pipe, config = self.pipe, self._require("vae").config
        channels = config.get("latent_channels") or config.get("z_dim")
        spatial = next(getattr(pipe, n) for n in ("vae_scale_factor_spatial", "vae_spatial_compression_ratio",
                                                   "vae_scale_factor") if isinstance(getattr(pipe, n, None), int))
        temporal = next((getattr(pipe, n) for n in ("vae_scale_factor_temporal", "vae_temporal_compression_ratio")
                         if isinstance(getattr(pipe, n, None), int)), 1)
        frames = 1 if self.media == "image" else (num_frames - 1) // temporal + 1
        return (int(channels), frames, height // spatial, width // spatial)

    def check_media_size(self, num_frames: int, height: int, width: int) -> None:
        if self.pixel_space:  # no VAE compression for the frame count to fit
            if self.media == "image" and num_frames != 1:
                super().check_media_size(num_frames, height, width)
        else:
            super().check_media_size(num_frames, height, width)
        multiple = self.spatial_multiple
        if height % multiple or width % multiple:
            raise MediaSizeError(f"backbone `{self.name}` takes heights and widths that are multiples of {multiple} "
                                 f"(its VAE's downsampling × the denoiser's patch size), got {height}×{width}.")

    def use_loras(self, paths: Sequence[Path]) -> None:
        """Loads each LoRA file once as a named adapter, then activates exactly ``paths``. Through the pipeline's
        ``load_lora_weights`` when diffusers has a LoRA loader for it, else onto the denoiser through peft (PixArt)."""
        import hashlib

        from prefopt.lora import denoiser_only_loras, expected_peft_warnings, load_lora_file

        loaded = self.__dict__.setdefault("_loaded_adapters", {})
        by_pipeline = self.has_lora_loader()
        names = []
        for path in paths:
            key = str(Path(path).resolve())
            if key not in loaded:
                name = f"lora_{hashlib.sha256(key.encode()).hexdigest()[:8]}"
                if by_pipeline:
                    with expected_peft_warnings(), denoiser_only_loras():  # several adapters, on purpose
                        self.pipe.load_lora_weights(str(Path(path).parent), weight_name=Path(path).name,
                                                    adapter_name=name)
                else:
                    load_lora_file(self.denoiser, Path(path), self.denoiser_attribute, name)
                loaded[key] = name
            names.append(loaded[key])
        lora_owner = self.pipe if by_pipeline else self.denoiser
        if names:
            lora_owner.enable_lora()
            with expected_peft_warnings():
                lora_owner.set_adapters(names, [1.0] * len(names))
        elif loaded:
            lora_owner.disable_lora()
        # peft creates each adapter's dropout modules in training mode, whatever the model's mode: a LoRA trained
        # with dropout would otherwise drop units while sampling.
        self.denoiser.eval()

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
        if not self.has_lora_loader():  # the same format, written here
            from prefopt.lora import write_lora_file

            return write_lora_file(directory / LORA_WEIGHTS_NAME, self.denoiser_attribute, state_dict, adapter_config)
        layers = {f"{self.denoiser_attribute}_lora_layers": state_dict,
                  f"{self.denoiser_attribute}_lora_adapter_metadata": adapter_config}
        self.pipeline_class().save_lora_weights(directory, **layers, safe_serialization=True)
        return directory / LORA_WEIGHTS_NAME

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
        self.check_media_size(num_frames, height, width)
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        latents = self._sample_latents(
            list(prompts), generators, num_frames=num_frames, height=height, width=width,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
        )
        frames = self.decode_latents(latents)
        return [
            GeneratedMedia(frames=f, latents=latent.cpu(), prompt=p, seed=int(s))
            for f, latent, p, s in zip(frames, latents, prompts, seeds)
        ]

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 frames ``[B, F, H, W, 3]`` from latents in the training layout ``[B, C, F, h, w]``."""
        if self.pixel_space:
            video = latents.to(self.device)
        else:
            vae = self._require("vae")
            latents = self._denormalize_latents(self._to_vae_layout(latents.to(self.device, vae.dtype)))
            video = self._from_vae_layout(self._vae_decode(latents))  # [B, C, F, H, W] in [-1, 1]
        video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return video.permute(0, 2, 3, 4, 1).cpu().numpy()

    # --- generation: one pipeline call, its latents brought to the training layout ---------------

    def _sample_latents(self, prompts, generators, *, num_frames, height, width, num_inference_steps,
                        guidance_scale) -> torch.Tensor:
        """Run the pipeline to its final latents (``output_type="latent"``), in the training layout."""
        call = dict(prompt=prompts, generator=generators, height=height, width=width,
                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, output_type="latent",
                    **self._pipeline_call_kwargs())
        if self.media == "video":
            call["num_frames"] = num_frames
        output = self.pipe(**call)
        latents = output.images if self.media == "image" else output.frames
        return self._from_pipeline_latents(latents, num_frames=num_frames, height=height, width=width)

    def _pipeline_call_kwargs(self) -> dict[str, Any]:
        """Extra arguments of every sampling call (e.g. the text length the training cache uses)."""
        return {}

    def _from_pipeline_latents(self, latents: torch.Tensor, *, num_frames: int, height: int,
                               width: int) -> torch.Tensor:
        """Pipeline latents (normalised, in the pipeline's layout) in the training layout ``[B, C, F, h, w]``;
        packed-token families unpack here."""
        return latents.unsqueeze(2) if self.media == "image" else latents

    # --- VAE layout and latent normalisation ---------------------------------------------------

    def _to_vae_layout(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, C, F, H, W]`` as the VAE takes it: image VAEs take ``[B, C, H, W]``."""
        return video[:, :, 0] if self.media == "image" else video

    def _from_vae_layout(self, video: torch.Tensor) -> torch.Tensor:
        return video.unsqueeze(2) if self.media == "image" else video

    def _vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.pipe.vae.decode(latents, return_dict=False)[0]

    def _latent_stats(self, latents: torch.Tensor) -> tuple[Any, Any, float, float]:
        """(mean, std, scale, shift) of the VAE's latent normalisation. Per-channel statistics come from
        buffers (LTX-Video) or the config (Wan); the scale and shift from the config (SD3 and FLUX shift)."""
        vae = self.pipe.vae
        config = vae.config
        buffers = dict(vae.named_buffers(recurse=False))
        mean, std = buffers.get("latents_mean"), buffers.get("latents_std")
        if mean is None:
            mean, std = config.get("latents_mean"), config.get("latents_std")
        scale, shift = config.get("scaling_factor") or 1.0, config.get("shift_factor") or 0.0
        if mean is None or std is None:
            return None, None, scale, shift
        shape = (1, -1) + (1,) * (latents.ndim - 2)
        mean = torch.as_tensor(mean).reshape(shape).to(latents.device, latents.dtype)
        std = torch.as_tensor(std).reshape(shape).to(latents.device, latents.dtype)
        return mean, std, scale, shift

    def _normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std, scale, shift = self._latent_stats(latents)
        if mean is not None:
            return (latents - mean) * scale / std
        return (latents - shift) * scale

    def _denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std, scale, shift = self._latent_stats(latents)
        if mean is not None:
            return latents * std / scale + mean
        return latents / scale + shift

    def _require(self, name: str) -> Any:
        module = getattr(self.pipe, name, None)
        if module is None:
            raise RuntimeError(
                f"the {name} of backbone `{self.name}` was unloaded to save memory; encode media and "
                "prompts before training starts, or build a new backbone."
            )
        return module


_WARNED_CAPS: set = set()


def dynamic_mu(scheduler_config, tokens: int) -> float:
    """μ of dynamic shifting (the shift is e^μ): linear in the token count through (base_image_seq_len,
    base_shift) and (max_image_seq_len, max_shift), unbounded past them, as the FLUX and LTX-Video pipelines."""
    c = scheduler_config
    slope = (c.max_shift - c.base_shift) / (c.max_image_seq_len - c.base_image_seq_len)
    return c.base_shift + slope * (tokens - c.base_image_seq_len)


def _smallest_sigma(shift: float, num_train_timesteps: int) -> float:
    sigma = 1.0 / num_train_timesteps
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


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
    #: The denoiser's timestep is σ times this (FLUX takes σ itself and scales inside).
    model_timestep_scale: ClassVar[float] = 1000.0

    def sample_timesteps(self, batch_size: int, generator: torch.Generator | None = None, *,
                         latent_shape: Sequence[int] | None = None) -> torch.Tensor:
        """σ drawn from the configured density, snapped to the scheduler's (shifted) training grid."""
        from diffusers.training_utils import compute_density_for_timestep_sampling

        config = self.config
        u = compute_density_for_timestep_sampling(
            weighting_scheme=config.timestep_sampling, batch_size=batch_size, logit_mean=config.logit_mean,
            logit_std=config.logit_std, mode_scale=config.mode_scale, generator=generator,
        )
        sigmas = self._training_sigmas(latent_shape)
        indices = (u * len(sigmas)).long().clamp(0, len(sigmas) - 1)
        return sigmas[indices]

    def training_shift(self, latent_shape: Sequence[int] | None = None) -> float:
        """The σ shift training uses: the configured one, else the scheduler's static one. Schedulers with dynamic
        shifting (FLUX, LTX-Video) have no static shift (their `shift` key is never read): they train unshifted,
        as the references do, or with `dynamic_shift` on e^μ, μ linear in the latent token count and capped at
        `max_shift`. `shift_terminal` (LTX-Video) stretches the sampling schedule's end only and is not applied
        to training σ (finetrainers does the same)."""
        if self.config.shift is not None:
            return float(self.config.shift)
        scheduler_config = self.pipe.scheduler.config
        if not scheduler_config.get("use_dynamic_shifting", False):
            return scheduler_shift(scheduler_config)
        if not getattr(self.config, "dynamic_shift", False):
            return 1.0
        if latent_shape is None:
            raise ValueError(f"backbone `{self.name}` shifts σ by the media size: pass `latent_shape`.")
        mu = dynamic_mu(scheduler_config, self._sequence_length(latent_shape))
        if mu > scheduler_config.max_shift:
            key = (self.name, tuple(latent_shape[2:]))
            if key not in _WARNED_CAPS:
                _WARNED_CAPS.add(key)
                logger.warning(
                    "%s's σ shift for latents %s would be %.3g, which leaves no training σ below %.2f; training "
                    "caps it at the scheduler's max_shift, e^%.3g = %.3g (set `backbone.options.shift` to choose).",
                    self.name, "×".join(map(str, latent_shape[2:])), math.exp(mu),
                    _smallest_sigma(math.exp(mu), int(scheduler_config.num_train_timesteps)),
                    scheduler_config.max_shift, math.exp(scheduler_config.max_shift))
            mu = scheduler_config.max_shift
        return math.exp(mu)

    def _sequence_length(self, latent_shape: Sequence[int]) -> int:
        """Tokens the denoiser sees for one sample of ``latent_shape`` ``[B, C, F, h, w]`` (dynamic shifting)."""
        return int(np.prod(latent_shape[2:]))

    def _training_sigmas(self, latent_shape: Sequence[int] | None = None) -> torch.Tensor:
        """The scheduler's training grid σ_i = i/N with its shift (computed, not read from the scheduler,
        whose ``sigmas`` are overwritten by every sampling call)."""
        num = int(self.pipe.scheduler.config.num_train_timesteps)
        shift = self.training_shift(latent_shape)
        sigmas = torch.linspace(1.0, 1.0 / num, num, dtype=torch.float64).flip(0)
        return (shift * sigmas / (1.0 + (shift - 1.0) * sigmas)).float()

    def forward_train(self, latents, noise, timesteps, conditioning, denoiser=None) -> BackboneOutput:
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        sigmas = timesteps.to(latents.device, torch.float32).view(-1, *([1] * (latents.ndim - 1)))
        noisy = (1.0 - sigmas) * latents + sigmas * noise
        model = denoiser if denoiser is not None else self.denoiser
        prediction = self._predict(model, noisy, timesteps * self.model_timestep_scale, conditioning)
        weights = compute_loss_weighting_for_sd3(self.config.loss_weighting, timesteps.float()).to(latents.device)
        if self.config.precondition_outputs:  # ‖x_σ − σv − x₀‖² = σ²‖v − (ε − x₀)‖²
            weights = weights * timesteps.float().to(latents.device) ** 2
        return BackboneOutput(prediction=prediction, target=noise - latents, weights=weights.reshape(-1))

    # --- online RL: the sampler's grid and one velocity at a time ----------------------------------

    def sampling_sigmas(self, num_steps: int, latent_shape: Sequence[int]) -> torch.Tensor:
        """The ``num_steps + 1`` times σ (1 → 0) the pipeline's Euler sampler visits: its scheduler's shift (static,
        or e^μ of the token count) applied to :meth:`_unshifted_sigmas`, and the terminal 0."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        config = self.pipe.scheduler.config
        # A copy, so the pipeline's scheduler keeps its state; Wan's UniPC config names its shift `flow_shift`.
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(config, shift=scheduler_shift(config))
        kwargs = {}
        if config.get("use_dynamic_shifting", False):
            kwargs["mu"] = dynamic_mu(config, self._sequence_length(latent_shape))
        scheduler.set_timesteps(sigmas=self._unshifted_sigmas(num_steps).tolist(), **kwargs)
        return scheduler.sigmas.to(torch.float64)

    def _unshifted_sigmas(self, num_steps: int) -> np.ndarray:
        """The grid before the shift: 1, 1 − 1/N, …, 1/N, as HunyuanVideo's, FLUX's and LTX-Video's pipelines pass."""
        return np.linspace(1.0, 1.0 / num_steps, num_steps)

    def predict_velocity(self, noisy: torch.Tensor, sigmas: torch.Tensor, conditioning: dict[str, torch.Tensor],
                         denoiser: torch.nn.Module | None = None) -> torch.Tensor:
        """The velocity v = ε − x₀ the denoiser predicts at ``noisy`` ``[B, C, F, h, w]`` and times σ ``[B]``."""
        model = denoiser if denoiser is not None else self.denoiser
        sigmas = sigmas.to(noisy.device, torch.float32)
        return self._predict(model, noisy, sigmas * self.model_timestep_scale, conditioning).float()

    @abc.abstractmethod
    def _predict(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        """Call the denoiser on noised latents ``[B, C, F, h, w]`` with the model's own timestep convention;
        return the prediction in the same layout."""


class DDPMBackbone(DiffusersBackbone):
    """DDPM training inputs (UNets, CogVideoX): x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε, target ε or v by the scheduler's
    `prediction_type`, integer model timesteps, weight 1."""

    def __init__(self, config: DiffusersBackboneConfig, pipeline: Any | None = None):
        super().__init__(config, pipeline)
        self.train_scheduler = self._train_scheduler()
        self.prediction_type = self.train_scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r} in the scheduler config")

    def _train_scheduler(self) -> Any:
        """Training noises with the DDPM forward process, whatever sampler the pipeline ships with."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.pipe.scheduler.config)

    def sample_timesteps(self, batch_size: int, generator: torch.Generator | None = None, *,
                         latent_shape: Sequence[int] | None = None) -> torch.Tensor:
        steps = self.train_scheduler.config.num_train_timesteps
        return torch.randint(0, steps, (batch_size,), generator=generator)

    def forward_train(self, latents, noise, timesteps, conditioning, denoiser=None) -> BackboneOutput:
        scheduler = self.train_scheduler
        timesteps = timesteps.to(latents.device).long()
        # add_noise and get_velocity index ᾱ by timestep and broadcast over every trailing axis.
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = noise if self.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
        model = denoiser if denoiser is not None else self.denoiser
        prediction = self._predict(model, noisy, timesteps, conditioning)
        return BackboneOutput(prediction=prediction, target=target,
                              weights=torch.ones(latents.shape[0], device=latents.device))

    @abc.abstractmethod
    def _predict(self, model, noisy, model_timesteps, conditioning) -> torch.Tensor:
        """Call the denoiser on noised latents ``[B, C, F, h, w]``; return the prediction in the same layout."""

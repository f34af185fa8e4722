"""DiffusionDPOTrainer: offline Diffusion-DPO (and plain SFT) with LoRA under accelerate.

The backbone turns latents into (prediction, target, weights); this module owns the objective. The
reference is the same denoiser with the DPO adapter disabled (no second copy of the model). Winner and
loser share noise and timestep. Noise, timesteps and data order derive from (seed, step), so a resumed
run continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from prefopt import contract
from prefopt.data import EncodedCache, PreferenceExample, SFTExample
from prefopt.dpo_steps import SCHEDULES, Batch
from prefopt.errors import PrefoptError
from prefopt.lora import POLICY_ADAPTER, REFERENCE_ADAPTER, adapter_parameters, add_lora, lora_state_dict
from prefopt.lora_trainer import (  # re-exported: recipes, tests and plugins import them from here
    TRACKERS,
    LoRATrainer,
    LoRATrainingConfig,
    TrainingDivergedError,
    cpu_only,
    media_size,
    only_with,
)
from prefopt.losses import denoising_loss
from prefopt.progress import progress_bar

__all__ = ["TRACKERS", "DiffusionDPOTrainer", "TrainerConfig", "TrainingDivergedError", "cpu_only", "media_size"]

logger = logging.getLogger(__name__)


@dataclass
class TrainerConfig(LoRATrainingConfig):
    """Options of :class:`DiffusionDPOTrainer`. Names follow trl's DPOConfig where one exists."""

    mode: Literal["dpo", "sft"] = field(
        default="dpo", metadata={"help": "`dpo` trains on preference pairs; `sft` on single media (identity LoRA)."}
    )
    max_steps: int = field(default=1000, metadata={"min": 1, "help": "Optimizer steps."})
    batch_size: int = field(default=1, metadata={"min": 1, "help": "Pairs (or SFT samples) per process per micro-step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"min": 1, "help": "Micro-steps per optimizer step."})
    beta: float = field(
        default=5000.0,
        metadata={"above": 0, "help": "DPO β in −log σ(−β/2·Δ) (Salesforce's convention and value; the same strength as "
                          "diffusers' −log σ(−β·Δ) with β = 2500). See docs/losses.md."},
    )
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust"] = field(
        default="sigmoid", metadata={"help": "DPO loss variant (trl's names)."}
    )
    label_smoothing: float = field(default=0.0, metadata={"min": 0, "below": 0.5, "help": "Label-flip rate for `robust`."})
    rpo_alpha: float = field(
        default=0.0, metadata={"min": 0, "help": "Weight of an SFT term on winners added to the DPO loss (trl's name)."}
    )
    dpo_schedule: Literal["joint", "split"] = field(
        default="joint",
        metadata={"help": "`joint`: one forward/backward on winners+losers; `split`: no-grad errors first, then "
                          "one sample's forward+backward at a time (same gradients, less activation memory)."},
    )
    sync_ref_model: bool = field(
        default=False, metadata={"help": "TR-DPO: periodically mix the policy LoRA into a reference LoRA (trl's name)."}
    )
    ref_model_sync_steps: int = field(default=512, metadata={"min": 1, "help": "Steps between reference syncs."})
    ref_model_mixup_alpha: float = field(default=0.6, metadata={"above": 0, "max": 1, "help": "ref ← α·policy + (1 − α)·ref."})
    checkpoint_every: int = field(default=100, metadata={"min": 1, "help": "Save a resumable checkpoint every N steps."})
    log_every: int = field(default=1, metadata={"min": 1, "help": "Write metrics every N steps."})
    num_frames: int | None = field(
        default=None, metadata={"min": 1, "help": "Frames media files are encoded at; empty: the backbone's default (1 for "
                                        "image backbones)."})
    height: int | None = field(
        default=None, metadata={"min": 1, "help": "Height media files are encoded at; empty: the backbone's default (an "
                                        "image backbone's native resolution)."})
    width: int | None = field(default=None, metadata={"min": 1, "help": "Width media files are encoded at; empty: the "
                                                                "backbone's default."})

    def __post_init__(self) -> None:
        super().__post_init__()
        # Options that only matter together with another one: set alone, they would do nothing.
        only_with(self, ("beta", "loss_type", "label_smoothing", "rpo_alpha", "dpo_schedule", "sync_ref_model",
                         "ref_model_sync_steps", "ref_model_mixup_alpha"), self.mode == "dpo", "`mode: dpo`")
        only_with(self, ("label_smoothing",), self.loss_type == "robust", "`loss_type: robust`")
        only_with(self, ("ref_model_sync_steps", "ref_model_mixup_alpha"), self.sync_ref_model,
                  "`sync_ref_model: true`")
        if self.dpo_schedule == "split" and self.lora_dropout > 0:
            # Its no-grad pass and its backward pass would draw different dropout masks: not the joint gradient.
            raise ValueError("`dpo_schedule: split` gives the joint step's gradient only without LoRA dropout; set "
                             "`lora_dropout: 0` or `dpo_schedule: joint`")


class DiffusionDPOTrainer(LoRATrainer):
    """Trains a backbone's denoiser with LoRA on preference pairs (``mode="dpo"``) or media (``"sft"``)."""

    def __init__(self, backbone, config: TrainerConfig, output_dir: str | Path, accelerator=None):
        if config.sync_ref_model and importlib.util.find_spec("trl") is None:  # here: a finished run's config still reads
            raise PrefoptError("`sync_ref_model` uses trl's reference-sync routine, and trl is not installed: "
                               "`pip install 'prefopt[trl]'`")
        super().__init__(backbone, config, output_dir, accelerator, config.gradient_accumulation_steps)
        num_frames, height, width = media_size(backbone, config)
        backbone.check_media_size(num_frames, height, width)
        self.cache = EncodedCache(self.folder.cache, backbone, num_frames=num_frames, height=height,
                                  width=width)

    def total_steps(self) -> int:
        return self.config.max_steps

    # --- public ------------------------------------------------------------------------------------

    def train(self, examples: Sequence[PreferenceExample] | Sequence[SFTExample], resume: bool = True) -> Path:
        """Encode, train to ``max_steps`` (resuming from the latest checkpoint), save and return the LoRA."""
        if not examples:
            raise PrefoptError("no training examples: the pairs (or media) list is empty.")
        self._check_examples(examples)
        self._encode(examples)
        denoiser = self._prepare_model()
        optimizer, scheduler = self._optimizer(denoiser)
        model, optimizer = self.accelerator.prepare(denoiser, optimizer)
        if resume:
            self._resume(denoiser, optimizer, scheduler)
        else:
            self._truncate_metrics(0)
        self._start_trackers()
        self._loop(examples, denoiser, model, optimizer, scheduler)
        lora_file = self._save_final(denoiser)
        self._finish_trackers()
        return lora_file

    # --- setup -------------------------------------------------------------------------------------

    def _check_examples(self, examples) -> None:
        expected = PreferenceExample if self.config.mode == "dpo" else SFTExample
        wrong = [e for e in examples if not isinstance(e, expected)]
        if wrong:
            raise PrefoptError(f"mode `{self.config.mode}` trains on {expected.__name__} items, got {type(wrong[0]).__name__}.")

    def _encode(self, examples) -> None:
        """Main process encodes what is not cached; every process then reads the cache."""
        media = [m for e in examples for m in ((e.winner, e.loser) if isinstance(e, PreferenceExample) else (e.media,))]
        with self.accelerator.main_process_first():
            todo = len(dict.fromkeys(media))
            with progress_bar("encoding media", todo, enabled=self.is_main) as bar:
                self.cache.encode([e.prompt for e in examples], media, on_progress=bar.advance)
        self.backbone.unload_encoders()

    def _add_adapters(self, denoiser, lora: dict) -> None:
        if self.config.sync_ref_model and self.config.mode == "dpo":
            add_lora(denoiser, **lora, adapter_name=REFERENCE_ADAPTER)
            for ref, policy in zip(adapter_parameters(denoiser, REFERENCE_ADAPTER),
                                   adapter_parameters(denoiser, POLICY_ADAPTER), strict=True):
                ref.data.copy_(policy.data)

    def _adapters_to_save(self, denoiser) -> dict[str, dict[str, torch.Tensor]]:
        loras = super()._adapters_to_save(denoiser)
        if self.config.sync_ref_model and self.config.mode == "dpo":
            loras[REFERENCE_ADAPTER] = lora_state_dict(denoiser, REFERENCE_ADAPTER)
        return loras

    # --- the loop ----------------------------------------------------------------------------------

    def _loop(self, examples, denoiser, model, optimizer, scheduler) -> None:
        c = self.config
        with progress_bar(f"training ({c.mode})", c.max_steps, enabled=self.is_main, completed=self.step) as bar:
            while self.step < c.max_steps:
                metrics = self._optimizer_step(examples, denoiser, model, optimizer, scheduler)
                self.step += 1
                self._after_step(denoiser, optimizer, scheduler, metrics)
                bar.advance(loss=metrics["loss"], **({"acc": metrics["implicit_accuracy"]} if c.mode == "dpo" else {}))

    def _optimizer_step(self, examples, denoiser, model, optimizer, scheduler) -> dict[str, float]:
        c = self.config
        collected: list[dict[str, float]] = []
        for micro in range(c.gradient_accumulation_steps):
            batch = self._batch(examples, self.step * c.gradient_accumulation_steps + micro)
            with self.accelerator.accumulate(model):
                metrics = self._forward_backward(batch, denoiser, model, micro)
                if self.accelerator.sync_gradients and c.max_grad_norm > 0:
                    metrics["grad_norm"] = float(self.accelerator.clip_grad_norm_(
                        adapter_parameters(denoiser, POLICY_ADAPTER), c.max_grad_norm))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            collected.append(metrics)
        scheduler.step()
        averaged = {k: sum(m.get(k, 0.0) for m in collected) / len(collected) for k in collected[0]}
        return {**averaged, "lr": scheduler.get_last_lr()[0]}

    def _forward_backward(self, batch: Batch, denoiser, model, micro: int) -> dict[str, float]:
        """Loss and gradients of one micro-batch (the DPO schedule decides how); returns its metrics."""
        generator = self._generator(micro)
        latents = batch.latents
        pairs = latents.shape[0] // 2 if self.config.mode == "dpo" else latents.shape[0]
        noise = torch.randn(latents[:pairs].shape, generator=generator).to(latents.device, latents.dtype)
        timesteps = self.backbone.sample_timesteps(pairs, generator, latent_shape=tuple(latents.shape))
        timesteps = timesteps.to(latents.device)
        if self.config.mode == "sft":
            out = contract.forward_train(self.backbone, latents, noise, timesteps, batch.conditioning, denoiser=model)
            loss = denoising_loss(out.prediction, out.target, out.weights)
            self._backward(loss)
            return {"loss": loss.item()}
        schedule = SCHEDULES[self.config.dpo_schedule]
        reference_adapter = REFERENCE_ADAPTER if self.config.sync_ref_model else None
        return schedule(self.backbone, denoiser, model, batch, noise, timesteps, self.config, reference_adapter,
                        backward=self._backward)

    def _backward(self, loss: torch.Tensor) -> None:
        self._check_finite(loss, "Lower `learning_rate` or `beta`, or check the pairs for broken media.")  # before any gradient is accumulated: the weights stay the last good ones
        self.accelerator.backward(loss)

    def _generator(self, micro: int) -> torch.Generator:
        """Noise and timesteps depend only on (seed, step, micro-step, process): resumable and reproducible."""
        entropy = [self.config.seed, self.step, micro, self.accelerator.process_index]
        return torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1))

    def _batch(self, examples, micro_index: int) -> Batch:
        indices = self._indices(len(examples), micro_index)
        chosen = [examples[i] for i in indices]
        device = self.accelerator.device
        if self.config.mode == "dpo":
            media = [e.winner for e in chosen] + [e.loser for e in chosen]
            prompts = [e.prompt for e in chosen] * 2
            weights = torch.tensor([e.weight for e in chosen], dtype=torch.float32, device=device)
        else:
            media, prompts = [e.media for e in chosen], [e.prompt for e in chosen]
            weights = torch.ones(len(chosen), device=device)
        latents = self._stack_latents(media).to(device)
        texts = [self.cache.load_text(p) for p in prompts]
        conditioning = {k: torch.cat([t[k] for t in texts]).to(device) for k in texts[0]}
        return Batch(latents=latents, conditioning=conditioning, weights=weights)

    def _indices(self, n: int, micro_index: int) -> list[int]:
        """This process's examples for a micro-step: a seeded permutation per epoch, sharded by process."""
        world, rank, size = self.accelerator.num_processes, self.accelerator.process_index, self.config.batch_size
        per_step = world * size
        steps_per_epoch = max(1, n // per_step) if n >= per_step else 1
        epoch, offset = divmod(micro_index, steps_per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch))
        if n < per_step:  # fewer examples than one global batch: cycle through them
            order = order.repeat(math.ceil(per_step / n))
        start = offset * per_step + rank * size
        return order[start : start + size].tolist()

    def _stack_latents(self, media: list[str]) -> torch.Tensor:
        latents = [self.cache.load_latents(m) for m in media]
        shapes = {tuple(t.shape) for t in latents}
        if len(shapes) > 1:
            raise PrefoptError(
                f"media in one batch encode to different latent shapes {sorted(shapes)} (e.g. `{media[0]}`); "
                "generate or encode every video at the same size and frame count."
            )
        return torch.cat(latents)

    # --- after each step ---------------------------------------------------------------------------

    def _after_step(self, denoiser, optimizer, scheduler, metrics: dict[str, float]) -> None:
        c = self.config
        if c.sync_ref_model and c.mode == "dpo" and self.step % c.ref_model_sync_steps == 0:
            self._sync_reference(denoiser)
        if self.step % c.log_every == 0 or self.step == c.max_steps:
            self._log(metrics)
        if self.step % c.checkpoint_every == 0 or self.step == c.max_steps:
            self._checkpoint(denoiser, optimizer, scheduler)

    def _sync_reference(self, denoiser) -> None:
        """TR-DPO soft update of the reference LoRA, with trl's parameter-mixing routine."""
        from trl.trainer.callbacks import SyncRefModelCallback

        policy = torch.nn.ParameterList(adapter_parameters(denoiser, POLICY_ADAPTER))
        reference = torch.nn.ParameterList(adapter_parameters(denoiser, REFERENCE_ADAPTER))
        SyncRefModelCallback.sync_target_model(policy, reference, self.config.ref_model_mixup_alpha)

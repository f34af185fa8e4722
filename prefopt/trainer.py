"""DiffusionDPOTrainer: offline Diffusion-DPO (and plain SFT) with LoRA under accelerate.

The backbone turns latents into (prediction, target, weights); this module owns the objective. The
reference is the same denoiser with the DPO adapter disabled (no second copy of the model). Winner and
loser share noise and timestep. Noise, timesteps and data order derive from (seed, step), so a resumed
run continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from prefopt.checkpoint import (
    apply_checkpoint,
    latest_checkpoint,
    newest_readable_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from prefopt.config import check_bounds
from prefopt.data import (
    EncodedCache,
    PreferenceExample,
    SFTExample,
    load_tensors,
    save_tensors,
    verify_safetensors,
)
from prefopt.dpo_steps import SCHEDULES, Batch
from prefopt.errors import PrefoptError
from prefopt.files import full_disk_named, read_jsonl, write_folder, write_text
from prefopt.layout import ADAPTER_NAME, LORA_WEIGHTS_NAME, StageFolder
from prefopt.lora import (
    POLICY_ADAPTER,
    REFERENCE_ADAPTER,
    adapter_parameters,
    add_lora,
    fuse_lora_file,
    load_lora_state,
    lora_state_dict,
)
from prefopt.losses import denoising_loss
from prefopt.progress import progress_bar
from prefopt.speed_levers import FP8Recipe, apply_speed_levers

# accelerate's trackers (accelerate.utils.LoggerType, less "all": a run names the one it installed).
TRACKERS = ("none", "tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")


def _read_adapter(path: str) -> dict[str, torch.Tensor]:
    file = Path(path) / ADAPTER_NAME if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise PrefoptError(f"`init_adapter` file `{file}` does not exist; point it at an earlier run's `lora/` folder.")
    return load_tensors(file, "`init_adapter` file")


def cpu_only() -> bool:
    """True without CUDA or with ACCELERATE_USE_CPU set: accelerate then runs (multi-)CPU processes."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()


class TrainingDivergedError(PrefoptError):
    """The loss became NaN or infinite."""


logger = logging.getLogger(__name__)

def _only_with(config, names: tuple[str, ...], condition: bool, needed: str) -> None:
    """Refuse options changed from their defaults that take effect only under ``needed``, when it does not hold."""
    if condition:
        return
    defaults = {f.name: f.default for f in fields(config)}
    changed = [name for name in names if getattr(config, name) != defaults[name]]
    if changed:
        raise ValueError(f"`{changed[0]}` takes effect only with {needed}; remove it, or set that too")


@dataclass
class TrainerConfig:
    """Options of :class:`DiffusionDPOTrainer`. Names follow trl's DPOConfig where one exists."""

    mode: Literal["dpo", "sft"] = field(
        default="dpo", metadata={"help": "`dpo` trains on preference pairs; `sft` on single media (identity LoRA)."}
    )
    max_steps: int = field(default=1000, metadata={"min": 1, "help": "Optimizer steps."})
    batch_size: int = field(default=1, metadata={"min": 1, "help": "Pairs (or SFT samples) per process per micro-step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"min": 1, "help": "Micro-steps per optimizer step."})
    learning_rate: float = field(default=2e-5, metadata={"above": 0, "help": "AdamW learning rate (paper: 2e-5)."})
    weight_decay: float = field(default=1e-4, metadata={"min": 0, "help": "AdamW weight decay (paper: 1e-4)."})
    adam_beta1: float = field(default=0.9, metadata={"min": 0, "below": 1, "help": "AdamW β1."})
    adam_beta2: float = field(default=0.999, metadata={"min": 0, "below": 1, "help": "AdamW β2."})
    adam_epsilon: float = field(default=1e-8, metadata={"above": 0, "help": "AdamW ε."})
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = field(
        default="constant_with_warmup", metadata={"help": "Learning-rate schedule (diffusers.optimization)."}
    )
    lr_warmup_steps: int = field(default=0, metadata={"min": 0, "help": "Linear warmup steps."})
    max_grad_norm: float = field(default=1.0, metadata={"min": 0, "help": "Gradient clipping norm; 0 disables."})
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
    lora_rank: int = field(default=32, metadata={"min": 1, "help": "LoRA rank."})
    lora_alpha: float = field(default=32.0, metadata={"above": 0, "help": "LoRA α (scale = α / rank)."})
    lora_dropout: float = field(default=0.0, metadata={"min": 0, "below": 1, "help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=list, metadata={"help": "Module names LoRA adapts; empty uses the backbone's default."}
    )
    init_lora: str | None = field(
        default=None,
        metadata={"help": "An earlier LoRA (e.g. MagicID's identity LoRA) fused into the base: reference = base + it."},
    )
    init_adapter: str | None = field(
        default=None,
        metadata={"help": "Start the trainable LoRA from these weights (`lora/adapter.safetensors` of an earlier "
                          "run), e.g. to continue DPO in a second stage; the reference is unchanged."},
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
    mixed_precision: Literal["no", "bf16", "fp16"] = field(default="no", metadata={"help": "accelerate autocast."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})
    attention_backend: str | None = field(
        default=None,
        metadata={"help": "diffusers attention backend for the denoiser (`native`, `_native_cudnn`, `flash` with "
                          "flash-attn installed, …); unset keeps the model's default."},
    )
    offload_activations: bool = field(
        default=False,
        metadata={"help": "Keep the policy forward's saved activations in pinned host memory until backward "
                          "(torch.autograd.graph.save_on_cpu): less GPU memory, more transfers."},
    )
    checkpoint_every_n_blocks: int = field(
        default=1, metadata={"min": 1, "help": "With gradient checkpointing: checkpoint only every n-th block (1 = all)."}
    )
    checkpoint_save_attention: bool = field(
        default=False,
        metadata={"help": "With gradient checkpointing: keep each checkpointed block's attention output (fused "
                          "kernels only) so backward does not recompute attention; costs about one block input "
                          "of memory per block and sample."},
    )
    compile_blocks: bool = field(
        default=False,
        metadata={"help": "torch.compile each transformer block (regional: one compile per block type, at the "
                          "first step); fuses the elementwise work between matmuls."},
    )
    fp8: FP8Recipe = field(
        default="off",
        metadata={"help": "FP8 matmuls in the blocks' frozen linear layers via torchao (`tensorwise` fastest, "
                          "`rowwise` more accurate; needs an Ada/Hopper GPU). `emulated`: FP8 numerics on any "
                          "device, no speed-up. LoRA weights stay in high precision."},
    )
    seed: int = field(default=0, metadata={"help": "Seed for LoRA init, data order, noise and timesteps."})
    checkpoint_every: int = field(default=100, metadata={"min": 1, "help": "Save a resumable checkpoint every N steps."})
    keep_checkpoints: int = field(default=2, metadata={"min": 0, "help": "Newest checkpoints kept on disk."})
    log_every: int = field(default=1, metadata={"min": 1, "help": "Write metrics every N steps."})
    report_to: str = field(
        default="none",
        metadata={"help": "accelerate tracker: `tensorboard`, `wandb`, `mlflow`, `comet_ml`, `aim`, `clearml`, "
                          "`dvclive`, `swanlab`, `trackio`, or `none` (metrics.jsonl is written either way). The "
                          "tracker's package must be installed (`pip install prefopt[tensorboard]`, `wandb`, …)."},
    )
    num_frames: int | None = field(
        default=None, metadata={"min": 1, "help": "Frames media files are encoded at; empty: the backbone's default (1 for "
                                        "image backbones)."})
    height: int | None = field(
        default=None, metadata={"min": 1, "help": "Height media files are encoded at; empty: the backbone's default (an "
                                        "image backbone's native resolution)."})
    width: int | None = field(default=None, metadata={"min": 1, "help": "Width media files are encoded at; empty: the "
                                                                "backbone's default."})

    def __post_init__(self) -> None:
        check_bounds(self)  # the bounds each field declares (shown by `prefopt options trainer`)
        # Options that only matter together with another one: set alone, they would do nothing.
        _only_with(self, ("beta", "loss_type", "label_smoothing", "rpo_alpha", "dpo_schedule", "sync_ref_model",
                          "ref_model_sync_steps", "ref_model_mixup_alpha"), self.mode == "dpo", "`mode: dpo`")
        _only_with(self, ("label_smoothing",), self.loss_type == "robust", "`loss_type: robust`")
        _only_with(self, ("ref_model_sync_steps", "ref_model_mixup_alpha"), self.sync_ref_model,
                   "`sync_ref_model: true`")
        _only_with(self, ("checkpoint_every_n_blocks",), self.gradient_checkpointing, "`gradient_checkpointing: true`")
        if self.report_to not in TRACKERS:
            raise ValueError(f"`report_to` must be one of {', '.join(TRACKERS)}, got `{self.report_to}`")
        if self.checkpoint_save_attention and not self.gradient_checkpointing:
            raise ValueError("`checkpoint_save_attention` keeps attention outputs in checkpointed blocks: it needs "
                             "`gradient_checkpointing: true`.")


class DiffusionDPOTrainer:
    """Trains a backbone's denoiser with LoRA on preference pairs (``mode="dpo"``) or media (``"sft"``)."""

    def __init__(self, backbone, config: TrainerConfig, output_dir: str | Path, accelerator=None):
        from accelerate import Accelerator

        self.backbone = backbone
        self.config = config
        self.output_dir = Path(output_dir)
        self.folder = StageFolder(self.output_dir)  # where every file it writes goes (prefopt.layout)
        _check_tracker_installed(config.report_to)
        self.accelerator = accelerator or Accelerator(
            cpu=cpu_only(),  # several CPU processes (torchrun) need cpu=True to form a gloo group
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            log_with=None if config.report_to == "none" else config.report_to,
            project_dir=str(self.output_dir),
        )
        num_frames, height, width = media_size(backbone, config)
        backbone.check_media_size(num_frames, height, width)
        self.cache = EncodedCache(self.folder.cache, backbone, num_frames=num_frames, height=height,
                                  width=width)
        self.step = 0

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
        for tracker in self.accelerator.trackers:
            tracker.finish()  # not accelerator.end_training(): it destroys the process group a recipe still needs
        return lora_file

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

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

    def _prepare_model(self) -> torch.nn.Module:
        config, backbone = self.config, self.backbone
        backbone.to(self.accelerator.device)
        denoiser = backbone.denoiser
        denoiser.requires_grad_(False)
        if config.init_lora:
            fuse_lora_file(denoiser, config.init_lora, prefix=backbone.denoiser_attribute)
        lora = {"rank": config.lora_rank, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
                "target_modules": config.lora_target_modules or backbone.default_lora_targets}
        torch.manual_seed(config.seed)  # identical LoRA init on every process
        add_lora(denoiser, **lora)
        if config.init_adapter:
            load_lora_state(denoiser, _read_adapter(config.init_adapter))
        if config.sync_ref_model and config.mode == "dpo":
            add_lora(denoiser, **lora, adapter_name=REFERENCE_ADAPTER)
            for ref, policy in zip(adapter_parameters(denoiser, REFERENCE_ADAPTER),
                                   adapter_parameters(denoiser, POLICY_ADAPTER), strict=True):
                ref.data.copy_(policy.data)
            denoiser.set_adapter(POLICY_ADAPTER)
        apply_speed_levers(denoiser, self.accelerator.device, fp8=config.fp8,
                           gradient_checkpointing=config.gradient_checkpointing,
                           checkpoint_every_n_blocks=config.checkpoint_every_n_blocks,
                           checkpoint_save_attention=config.checkpoint_save_attention,
                           attention_backend=config.attention_backend, compile=config.compile_blocks)
        denoiser.train()
        return denoiser

    def _optimizer(self, denoiser):
        from diffusers.optimization import get_scheduler

        c = self.config
        params = adapter_parameters(denoiser, POLICY_ADAPTER)
        optimizer = torch.optim.AdamW(params, lr=c.learning_rate, betas=(c.adam_beta1, c.adam_beta2),
                                      weight_decay=c.weight_decay, eps=c.adam_epsilon)
        # Stepped once per optimizer step by hand: accelerate's wrapper steps it once per process.
        scheduler = get_scheduler(c.lr_scheduler, optimizer, num_warmup_steps=c.lr_warmup_steps,
                                  num_training_steps=c.max_steps)
        return optimizer, scheduler

    def _resume(self, denoiser, optimizer, scheduler) -> None:
        checkpoint = newest_readable_checkpoint(self.folder.checkpoints, set_aside=self.is_main)
        if checkpoint is None:
            self._truncate_metrics(0)  # an attempt killed before its first checkpoint starts over: so do its metrics
            return
        apply_checkpoint(checkpoint, optimizer, scheduler)
        for adapter, weights in checkpoint.loras.items():
            load_lora_state(denoiser, weights, adapter)
        self.step = int(checkpoint.state["step"])
        self._truncate_metrics(self.step)
        if self.is_main:  # printed, not only logged: library users who never configure logging see it too
            print(f"prefopt: resuming training from {checkpoint.path} (step {self.step}/{self.config.max_steps}).")

    def _start_trackers(self) -> None:
        if self.config.report_to != "none":
            self.accelerator.init_trackers("prefopt", config={k: str(v) for k, v in asdict(self.config).items()})

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
            out = self.backbone.forward_train(latents, noise, timesteps, batch.conditioning, denoiser=model)
            loss = denoising_loss(out.prediction, out.target, out.weights)
            self._backward(loss)
            return {"loss": loss.item()}
        schedule = SCHEDULES[self.config.dpo_schedule]
        reference_adapter = REFERENCE_ADAPTER if self.config.sync_ref_model else None
        return schedule(self.backbone, denoiser, model, batch, noise, timesteps, self.config, reference_adapter,
                        backward=self._backward)

    def _backward(self, loss: torch.Tensor) -> None:
        self._check_finite(loss)  # before any gradient is accumulated: the weights stay the last good ones
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

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            last = latest_checkpoint(self.folder.checkpoints)
            kept = f"the last good checkpoint is `{last}`" if last else "no checkpoint was written yet"
            raise TrainingDivergedError(
                f"the training loss became {loss.item()} at step {self.step + 1}; {kept}. Lower "
                "`learning_rate` or `beta`, or check the pairs for broken media."
            )

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

    def _log(self, metrics: dict[str, float]) -> None:
        if self.config.report_to != "none":
            self.accelerator.log(metrics, step=self.step)
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with full_disk_named(self.folder.metrics), open(self.folder.metrics, "a") as f:
                f.write(json.dumps({"step": self.step, **metrics}) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        """After a crash, drop metrics logged past the checkpoint we resume from (and a line the crash tore), so the
        log holds each step once."""
        path = self.folder.metrics
        if self.is_main and path.is_file():
            kept = [row for row in read_jsonl(path) if isinstance(row.get("step"), int) and row["step"] <= step]
            write_text(path, "".join(json.dumps(row) + "\n" for row in kept))

    def _checkpoint(self, denoiser, optimizer, scheduler) -> None:
        self.accelerator.wait_for_everyone()
        if self.is_main:
            root = self.folder.checkpoints
            loras = {POLICY_ADAPTER: lora_state_dict(denoiser)}
            if self.config.sync_ref_model and self.config.mode == "dpo":
                loras[REFERENCE_ADAPTER] = lora_state_dict(denoiser, REFERENCE_ADAPTER)
            save_checkpoint(root, self.step, loras, optimizer, scheduler, {"config": asdict(self.config)})
            prune_checkpoints(root, self.config.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    def _save_final(self, denoiser) -> Path:
        """The LoRA in diffusers format (``pipe.load_lora_weights`` accepts the directory), plus the
        peft-format ``adapter.safetensors`` that ``init_adapter`` continues from."""
        directory = self.folder.lora_dir
        if self.is_main:
            state = lora_state_dict(denoiser)

            def write(tmp: Path) -> None:
                self.backbone.save_lora(tmp, state, adapter_config=_adapter_config(denoiser))
                save_tensors(tmp / ADAPTER_NAME, state)

            write_folder(directory, write, check=lambda tmp: verify_safetensors(tmp / LORA_WEIGHTS_NAME, "final LoRA"),
                         replaces=LORA_WEIGHTS_NAME)
        self.accelerator.wait_for_everyone()
        return self.folder.lora


def media_size(backbone, config) -> tuple[int, int, int]:
    """(frames, height, width) media are encoded at: the config's, else the backbone's defaults."""
    height, width = backbone.default_resolution
    frames = 1 if backbone.media == "image" else backbone.default_num_frames
    return (config.num_frames or frames, config.height or height, config.width or width)


def _check_tracker_installed(tracker: str) -> None:
    """accelerate skips a tracker whose package is missing with only a log line; say so before training."""
    if tracker == "none":
        return
    import accelerate.utils

    if not getattr(accelerate.utils, f"is_{tracker}_available")():
        raise PrefoptError(f"`report_to: {tracker}` needs the `{tracker}` package: `pip install {tracker}` "
                           "(or set `report_to: none`; metrics.jsonl is written either way).")


def _adapter_config(denoiser) -> dict:
    """The policy adapter's peft config for the LoRA file's metadata. peft keeps `target_modules` as a set, whose
    order changes from process to process (string hashing is randomised): sorted, the same run writes the same
    bytes."""
    config = denoiser.peft_config[POLICY_ADAPTER].to_dict()
    return {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in config.items()}

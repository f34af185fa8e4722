"""What every LoRA trainer shares: the adapter on a frozen denoiser, the optimizer, memory and speed levers,
checkpoints that resume exactly, the metrics log and the final LoRA in diffusers' format.

:class:`prefopt.trainer.DiffusionDPOTrainer` (offline pairs) and :class:`prefopt.online_rl.OnlineRLTrainer` (online
RL) build on it; each owns its objective and its loop. ``self.step`` counts what a trainer checkpoints by (optimizer
steps for DPO, epochs for online RL).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import torch

from prefopt.checkpoint import (
    apply_checkpoint,
    latest_checkpoint,
    newest_readable_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from prefopt.config import check_bounds, choice_message
from prefopt.data import load_tensors, save_tensors, verify_safetensors
from prefopt.errors import PrefoptError
from prefopt.files import full_disk_named, read_jsonl, write_folder, write_text
from prefopt.layout import ADAPTER_NAME, LORA_WEIGHTS_NAME, StageFolder
from prefopt.lora import (
    POLICY_ADAPTER,
    activate,
    adapter_parameters,
    add_lora,
    attach_frozen_lora,
    load_lora_state,
    lora_state_dict,
)
from prefopt.speed_levers import FP8Recipe, apply_speed_levers

# accelerate's trackers (accelerate.utils.LoggerType, less "all": a run names the one it installed).
TRACKERS = ("none", "tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")


class TrainingDivergedError(PrefoptError):
    """The loss became NaN or infinite."""


def cpu_only() -> bool:
    """True without CUDA or with ACCELERATE_USE_CPU set: accelerate then runs (multi-)CPU processes."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()


#: Learning-rate schedules that do not depend on the training length: a longer run may continue a shorter one and
#: equal the longer run from scratch (`Stage.length`); under `linear` or `cosine` it starts over.
LENGTH_FREE_SCHEDULES = ("constant", "constant_with_warmup")


def continues_when_longer(config, length: str) -> str | None:
    """``length`` (a training stage's `Stage.length`) when this trainer config may continue a shorter run."""
    return length if config.lr_scheduler in LENGTH_FREE_SCHEDULES else None


def only_with(config, names: tuple[str, ...], condition: bool, needed: str) -> None:
    """Refuse options changed from their defaults that take effect only under ``needed``, when it does not hold."""
    if condition:
        return
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(config)}
    changed = [name for name in names if getattr(config, name) != defaults[name]]
    if changed:
        raise ValueError(f"`{changed[0]}` takes effect only with {needed}; remove it, or set that too")


@dataclass
class LoRATrainingConfig:
    """Options every LoRA trainer shares: optimizer, adapter, memory and speed levers, checkpoints, logging."""

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
    lora_rank: int = field(default=32, metadata={"min": 1, "help": "LoRA rank."})
    lora_alpha: float = field(default=32.0, metadata={"above": 0, "help": "LoRA α (scale = α / rank)."})
    lora_dropout: float = field(default=0.0, metadata={"min": 0, "below": 1, "help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=list, metadata={"help": "Module names LoRA adapts; empty uses the backbone's default, that of "
                                          "the family's reference trainer: to_q, to_k, to_v, to_out.0, and for SD3 "
                                          "and FLUX the text stream's projections (FLUX: and the MLPs) too."}
    )
    init_lora: str | None = field(
        default=None,
        metadata={"help": "An earlier LoRA (e.g. MagicID's identity LoRA) under the trained one, frozen: reference = "
                          "base + it, exactly as the pipeline samples with it (kept as an adapter, not fused into "
                          "bf16 weights)."},
    )
    init_adapter: str | None = field(
        default=None,
        metadata={"help": "Start the trainable LoRA from these weights (`lora/adapter.safetensors` of an earlier "
                          "run), e.g. to continue DPO in a second stage; the reference is unchanged."},
    )
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
    keep_checkpoints: int = field(default=2, metadata={"min": 0, "help": "Newest checkpoints kept on disk."})
    report_to: str = field(
        default="none",
        metadata={"help": "accelerate tracker: `tensorboard`, `wandb`, `mlflow`, `comet_ml`, `aim`, `clearml`, "
                          "`dvclive`, `swanlab`, `trackio`, or `none` (metrics.jsonl is written either way). The "
                          "tracker's package must be installed (`pip install prefopt[tensorboard]`, `wandb`, …)."},
    )
    tracker_project: str = field(
        default="prefopt",
        metadata={"outside_hash": True, "help": "The tracker's project (wandb, comet_ml, clearml, swanlab, trackio "
                                                "project; mlflow experiment; aim experiment; tensorboard: a folder "
                                                "under the stage's)."},
    )
    tracker_run_name: str | None = field(
        default=None,
        metadata={"outside_hash": True, "help": "The tracker's run name (wandb `name`, mlflow `run_name`, clearml task, "
                                                "swanlab experiment, trackio `name`; tensorboard: a folder under the "
                                                "project's; comet_ml, aim and dvclive name runs themselves). Empty: "
                                                "`<run>/<stage folder>`, e.g. `dpo/train-3f2a…`. Neither option "
                                                "retrains a stage."},
    )

    def __post_init__(self) -> None:
        check_bounds(self)  # the bounds each field declares (shown by `prefopt options trainer`)
        only_with(self, ("checkpoint_every_n_blocks",), self.gradient_checkpointing, "`gradient_checkpointing: true`")
        if self.report_to not in TRACKERS:
            raise ValueError(choice_message("report_to", TRACKERS, self.report_to))
        if self.checkpoint_save_attention and not self.gradient_checkpointing:
            raise ValueError("`checkpoint_save_attention` keeps attention outputs in checkpointed blocks: it needs "
                             "`gradient_checkpointing: true`.")


class LoRATrainer:
    """A LoRA on a backbone's frozen denoiser, trained under accelerate; subclasses own the objective and loop."""

    #: What ``self.step`` counts, in messages ("step", "epoch").
    unit = "step"

    def __init__(self, backbone, config: LoRATrainingConfig, output_dir: str | Path, accelerator=None,
                 gradient_accumulation_steps: int = 1):
        from accelerate import Accelerator

        self.backbone = backbone
        self.config = config
        self.output_dir = Path(output_dir)
        self.folder = StageFolder(self.output_dir)  # where every file it writes goes (prefopt.layout)
        check_tracker_installed(config.report_to)
        self.accelerator = accelerator or Accelerator(
            cpu=cpu_only(),  # several CPU processes (torchrun) need cpu=True to form a gloo group
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=gradient_accumulation_steps,
            log_with=None if config.report_to == "none" else config.report_to,
            project_dir=str(self.output_dir),
        )
        self.step = 0

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def total_steps(self) -> int:
        """How many ``self.step`` units the training runs."""
        raise NotImplementedError

    def optimizer_steps(self) -> int:
        """Optimizer steps in the whole training (the learning-rate schedule's length)."""
        return self.total_steps()

    # --- setup -------------------------------------------------------------------------------------

    def _prepare_model(self) -> torch.nn.Module:
        config, backbone = self.config, self.backbone
        backbone.to(self.accelerator.device)
        denoiser = backbone.denoiser
        denoiser.requires_grad_(False)
        if config.init_lora:
            attach_frozen_lora(denoiser, config.init_lora, prefix=backbone.denoiser_attribute)
        lora = {"rank": config.lora_rank, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
                "target_modules": config.lora_target_modules or backbone.default_lora_targets}
        torch.manual_seed(config.seed)  # identical LoRA init on every process
        add_lora(denoiser, **lora)
        if config.init_adapter:
            load_lora_state(denoiser, read_adapter(config.init_adapter))
        self._add_adapters(denoiser, lora)
        activate(denoiser)  # the trained adapter on top of the frozen initial one
        apply_speed_levers(denoiser, self.accelerator.device, fp8=config.fp8,
                           gradient_checkpointing=config.gradient_checkpointing,
                           checkpoint_every_n_blocks=config.checkpoint_every_n_blocks,
                           checkpoint_save_attention=config.checkpoint_save_attention,
                           attention_backend=config.attention_backend, compile=config.compile_blocks)
        denoiser.train()
        return denoiser

    def _add_adapters(self, denoiser, lora: dict) -> None:
        """Adapters besides the trained one (DPO's TR-DPO reference); none by default."""

    def _adapters_to_save(self, denoiser) -> dict[str, dict[str, torch.Tensor]]:
        return {POLICY_ADAPTER: lora_state_dict(denoiser)}

    def _optimizer(self, denoiser):
        from diffusers.optimization import get_scheduler

        c = self.config
        params = adapter_parameters(denoiser, POLICY_ADAPTER)
        optimizer = torch.optim.AdamW(params, lr=c.learning_rate, betas=(c.adam_beta1, c.adam_beta2),
                                      weight_decay=c.weight_decay, eps=c.adam_epsilon)
        # Stepped once per optimizer step by hand: accelerate's wrapper steps it once per process.
        scheduler = get_scheduler(c.lr_scheduler, optimizer, num_warmup_steps=c.lr_warmup_steps,
                                  num_training_steps=self.optimizer_steps())
        return optimizer, scheduler

    def _resume(self, denoiser, optimizer, scheduler) -> dict:
        """Load the newest readable checkpoint (its extra state is returned), or start the metrics anew."""
        checkpoint = newest_readable_checkpoint(self.folder.checkpoints, set_aside=self.is_main)
        if checkpoint is None:
            self._truncate_metrics(0)  # an attempt killed before its first checkpoint starts over: so do its metrics
            return {}
        apply_checkpoint(checkpoint, optimizer, scheduler)
        for adapter, weights in checkpoint.loras.items():
            load_lora_state(denoiser, weights, adapter)
        self.step = int(checkpoint.state["step"])
        self._truncate_metrics(self.step)
        if self.is_main:  # printed, not only logged: library users who never configure logging see it too
            print(f"prefopt: resuming training from {checkpoint.path} ({self.unit} {self.step}/{self.total_steps()}).")
        return dict(checkpoint.state)

    def _start_trackers(self) -> None:
        config = self.config
        if config.report_to == "none":
            return
        name = config.tracker_run_name or f"{self.output_dir.parent.name}/{self.output_dir.name}"
        project, init_kwargs = tracker_names(config.report_to, config.tracker_project, name)
        self.accelerator.init_trackers(project, config={k: str(v) for k, v in asdict(config).items()},
                                       init_kwargs=init_kwargs)

    def _finish_trackers(self) -> None:
        for tracker in self.accelerator.trackers:
            tracker.finish()  # not accelerator.end_training(): it destroys the process group a recipe still needs

    # --- while training ----------------------------------------------------------------------------

    def _check_finite(self, loss: torch.Tensor, advice: str) -> None:
        if not torch.isfinite(loss):
            last = latest_checkpoint(self.folder.checkpoints)
            kept = f"the last good checkpoint is `{last}`" if last else "no checkpoint was written yet"
            raise TrainingDivergedError(f"the training loss became {loss.item()} at {self.unit} {self.step + 1}; "
                                        f"{kept}. {advice}")

    def _log(self, metrics: dict[str, float]) -> None:
        if self.config.report_to != "none":
            self.accelerator.log(metrics, step=self.step)
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with full_disk_named(self.folder.metrics), open(self.folder.metrics, "a") as f:
                f.write(json.dumps({self.unit: self.step, **metrics}) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        """After a crash, drop metrics logged past the checkpoint we resume from (and a line the crash tore), so the
        log holds each step once."""
        path = self.folder.metrics
        if self.is_main and path.is_file():
            kept = [row for row in read_jsonl(path) if isinstance(row.get(self.unit), int) and row[self.unit] <= step]
            write_text(path, "".join(json.dumps(row) + "\n" for row in kept))

    def _checkpoint(self, denoiser, optimizer, scheduler, extra: dict | None = None) -> None:
        self.accelerator.wait_for_everyone()
        if self.is_main:
            root = self.folder.checkpoints
            save_checkpoint(root, self.step, self._adapters_to_save(denoiser), optimizer, scheduler,
                            {"config": asdict(self.config), **(extra or {})})
            prune_checkpoints(root, self.config.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    def _save_final(self, denoiser) -> Path:
        """The LoRA in diffusers format (``pipe.load_lora_weights`` accepts the directory), plus the
        peft-format ``adapter.safetensors`` that ``init_adapter`` continues from."""
        directory = self.folder.lora_dir
        if self.is_main:
            state = lora_state_dict(denoiser)

            def write(tmp: Path) -> None:
                self.backbone.save_lora(tmp, state, adapter_config=adapter_config(denoiser))
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


def read_adapter(path: str) -> dict[str, torch.Tensor]:
    file = Path(path) / ADAPTER_NAME if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise PrefoptError(f"`init_adapter` file `{file}` does not exist; point it at an earlier run's `lora/` folder.")
    return load_tensors(file, "`init_adapter` file")


#: Where each tracker takes a run's name (accelerate passes these to the tracker's own init).
RUN_NAME_KEYS = {"wandb": "name", "mlflow": "run_name", "clearml": "task_name", "swanlab": "experiment_name",
                 "trackio": "name"}


def tracker_names(tracker: str, project: str, run_name: str) -> tuple[str, dict]:
    """(project, init_kwargs) for accelerate's ``init_trackers``: the run's name where the tracker takes one;
    tensorboard names runs by folder (``<project>/<run name>``); comet_ml, aim and dvclive get the project only."""
    if tracker == "tensorboard":
        return f"{project}/{run_name}", {}
    key = RUN_NAME_KEYS.get(tracker)
    return project, ({tracker: {key: run_name}} if key else {})


def check_tracker_installed(tracker: str) -> None:
    """accelerate skips a tracker whose package is missing with only a log line; say so before training."""
    if tracker == "none":
        return
    import accelerate.utils

    if not getattr(accelerate.utils, f"is_{tracker}_available")():
        raise PrefoptError(f"`report_to: {tracker}` needs the `{tracker}` package: `pip install {tracker}` "
                           "(or set `report_to: none`; metrics.jsonl is written either way).")


def adapter_config(denoiser) -> dict:
    """The policy adapter's peft config for the LoRA file's metadata. peft keeps `target_modules` as a set, whose
    order changes from process to process (string hashing is randomised): sorted, the same run writes the same
    bytes."""
    config = denoiser.peft_config[POLICY_ADAPTER].to_dict()
    return {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in config.items()}

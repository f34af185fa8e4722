"""OnlineRLTrainer: online RL of a LoRA with group-relative advantages (GRPO, DiffusionNFT, AWM).

Each epoch samples ``prompts_per_epoch`` groups of ``group_size`` samples from the current policy, scores them with
the named rewards, turns the rewards into advantages within each group, and updates the LoRA. Groups are dealt to
processes (a group never spans two), advantages are computed from every process's rewards, and gradients are
averaged across processes by hand before each optimizer step. A sample's seed, an epoch's prompts, SDE window and
training noise derive from (seed, epoch, group, member), so a run resumed from an epoch's checkpoint continues
exactly as an uninterrupted one, and two runs of one config are the same. The reference for the KL term is the
denoiser with the LoRA disabled. docs/online-rl.md gives the formulas and the conventions of each algorithm.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from prefopt import contract
from prefopt.errors import PrefoptError
from prefopt.files import write_json
from prefopt.lora import POLICY_ADAPTER, adapter_parameters
from prefopt.lora_trainer import LoRATrainer, LoRATrainingConfig, only_with
from prefopt.progress import progress_bar
from prefopt.rl import combine_rewards, group_advantages
from prefopt.rl_updates import ForwardProcess, Micro, awm_update, grpo_update, nft_update, old_predictions
from prefopt.rollout import SDE, Rollout, sample, window_steps

#: Each algorithm's defaults for the options whose default depends on it (Flow-GRPO's clip and KL β; Flow-Factory's
#: clip for AWM, whose paper gives none for LoRA; DiffusionNFT trains without a KL term).
ALGORITHM_DEFAULTS = {"grpo": {"clip_range": 1e-4, "kl_beta": 0.04},
                      "nft": {"clip_range": None, "kl_beta": 0.0},
                      "awm": {"clip_range": 1e-5, "kl_beta": 0.0}}


@dataclass
class OnlineRLConfig(LoRATrainingConfig):
    """Options of :class:`OnlineRLTrainer` (the `trainer` of `recipes/online-rl.yaml`)."""

    algorithm: Literal["grpo", "nft", "awm"] = field(
        default="grpo", metadata={"help": "`grpo` (Flow-GRPO/DanceGRPO: SDE rollouts, PPO ratio on each step's "
                                          "log-probability), `nft` (DiffusionNFT) or `awm` (Advantage Weighted "
                                          "Matching); docs/online-rl.md says when to pick which."})
    epochs: int = field(default=100, metadata={"min": 1, "help": "Epochs of sample → score → update."})
    prompts_per_epoch: int = field(
        default=8, metadata={"min": 1, "help": "Groups sampled per epoch, one prompt each, across all processes (a "
                                               "multiple of the process count)."})
    group_size: int = field(default=8, metadata={"min": 2, "help": "Samples per group (G); advantages compare them."})
    sampling_steps: int = field(
        default=10, metadata={"min": 1, "help": "Denoising steps of training rollouts (denoising reduction: Flow-GRPO "
                                                "trains with 10 and evaluates with 40)."})
    rollout_guidance_scale: float = field(
        default=1.0, metadata={"min": 1, "help": "Classifier-free guidance of rollouts and of grpo's training forwards "
                                                 "(1: none; Flow-GRPO trains SD3.5 at 4.5). Guidance-distilled models "
                                                 "(HunyuanVideo, FLUX.1-dev) take theirs from `backbone.options.guidance`."})
    noise_schedule: Literal["flow_grpo", "constant"] = field(
        default="flow_grpo", metadata={"help": "grpo's SDE noise: Flow-GRPO's g = a·√(t/(1 − t)) or DanceGRPO's "
                                               "constant g = η."})
    noise_level: float = field(
        default=0.7, metadata={"above": 0, "help": "a of `flow_grpo` (Flow-GRPO: 0.7) or η of `constant` (DanceGRPO: "
                                                   "0.3)."})
    sde_window: int = field(
        default=0, metadata={"min": 0, "help": "grpo: SDE on this many consecutive steps, ODE elsewhere, and only they "
                                               "trained (MixGRPO, Flow-GRPO-Fast: 1–2); 0: every step (Flow-GRPO)."})
    sde_window_range: list[float] = field(
        default_factory=lambda: [0.0, 0.5],
        metadata={"help": "grpo with `sde_window`: the fraction of the steps where the window starts, drawn anew "
                          "each epoch (early steps: where samples diverge)."})
    timestep_fraction: float = field(
        default=1.0, metadata={"above": 0, "max": 1, "help": "grpo: fraction of the SDE steps trained each epoch, "
                                                             "drawn at random (DanceGRPO: 0.6)."})
    clip_range: float | None = field(
        default=None, metadata={"above": 0, "help": "PPO ratio clip ε of grpo and awm; empty: 1e-4 (grpo, Flow-GRPO), "
                                                    "1e-5 (awm, Flow-Factory)."})
    advantage_clip: float = field(
        default=5.0, metadata={"above": 0, "help": "Advantages clipped to ±this (Flow-GRPO: 5); nft's optimality "
                                                   "r = 1/2 + clip(A)/(2·this)."})
    global_std: bool = field(
        default=False, metadata={"help": "Divide advantages by the std of every reward of the epoch instead of the "
                                         "group's (Dr. GRPO-style; keeps small differences in flat groups small)."})
    kl_beta: float | None = field(
        default=None, metadata={"min": 0, "help": "Weight of the KL to the reference (the LoRA disabled); empty: 0.04 "
                                                  "for grpo (Flow-GRPO), 0 for nft and awm."})
    nft_beta: float = field(default=1.0, metadata={"above": 0, "help": "nft: β of the implicit policies v± = v_old ± "
                                                                     "β(v_θ − v_old) (DiffusionNFT: 1)."})
    train_timesteps: int = field(
        default=2, metadata={"min": 1, "help": "nft/awm: forward-process times per sample and epoch, drawn from the "
                                               "backbone's training density."})
    updates_per_epoch: int = field(
        default=1, metadata={"min": 1, "help": "Optimizer steps per epoch: each process's samples split into this "
                                               "many minibatches (Flow-GRPO: 2)."})
    inner_epochs: int = field(default=1, metadata={"min": 1, "help": "Passes over an epoch's samples."})
    micro_batch_size: int = field(default=4, metadata={"min": 1, "help": "Samples per forward."})
    checkpoint_every: int = field(default=1, metadata={"min": 1, "help": "Save a resumable checkpoint every N epochs."})
    learning_rate: float = field(default=3e-4, metadata={"above": 0, "help": "AdamW learning rate (Flow-GRPO's LoRA: "
                                                                           "3e-4)."})
    lora_alpha: float = field(default=64.0, metadata={"above": 0, "help": "LoRA α (Flow-GRPO: 64 at rank 32)."})
    num_frames: int | None = field(default=None, metadata={"min": 1, "help": "Frames of rollouts; empty: the "
                                                                           "backbone's default."})
    height: int | None = field(default=None, metadata={"min": 1, "help": "Height of rollouts; empty: the backbone's."})
    width: int | None = field(default=None, metadata={"min": 1, "help": "Width of rollouts; empty: the backbone's."})

    def __post_init__(self) -> None:
        super().__post_init__()
        grpo, forward = self.algorithm == "grpo", self.algorithm in ("nft", "awm")
        only_with(self, ("noise_schedule", "noise_level", "sde_window", "sde_window_range", "timestep_fraction"), grpo,
                  "`algorithm: grpo`")
        only_with(self, ("sde_window_range",), self.sde_window > 0, "`sde_window` above 0")
        only_with(self, ("train_timesteps",), forward, "`algorithm: nft` or `awm`")
        only_with(self, ("nft_beta",), self.algorithm == "nft", "`algorithm: nft`")
        only_with(self, ("clip_range",), self.algorithm != "nft", "`algorithm: grpo` or `awm`")
        low, high = (self.sde_window_range + [None, None])[:2]
        if len(self.sde_window_range) != 2 or not 0 <= low <= high <= 1:
            raise ValueError(f"`sde_window_range` must be two fractions [low, high] with 0 ≤ low ≤ high ≤ 1, got "
                             f"{self.sde_window_range}")
        for name, value in ALGORITHM_DEFAULTS[self.algorithm].items():
            if getattr(self, name) is None:
                setattr(self, name, value)


def _stream(*entropy: int) -> int:
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1, np.uint32)[0])


def training_seed(seed: int, epoch: int, group: int, member: int) -> int:
    """The seed of a training rollout: always even, so it is never an :func:`evaluation_seed`."""
    return 2 * (_stream(seed, epoch, group, member) >> 1)


def evaluation_seed(seed: int, prompt: int, member: int) -> int:
    """The seed of an evaluation sample: always odd, so no training rollout ever started from its noise."""
    return 2 * (_stream(seed, 1 << 30, prompt, member) >> 1) + 1


def _generator(*entropy: int) -> torch.Generator:
    return torch.Generator().manual_seed(_stream(*entropy))


@dataclass
class EpochSamples:
    """One process's samples of an epoch, in group order."""

    prompts: list[str]
    seeds: list[int]
    groups: torch.Tensor  # [n] global group index
    rewards: dict[str, torch.Tensor]  # name → [n]
    frames: np.ndarray  # [n, F, H, W, 3] uint8
    rollout: Rollout | None = None  # grpo
    forward: ForwardProcess | None = None  # nft / awm
    advantages: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    combined: torch.Tensor = field(default_factory=lambda: torch.zeros(0))


class OnlineRLTrainer(LoRATrainer):
    """Online RL of a backbone's LoRA against named rewards; ``self.step`` counts epochs."""

    unit = "epoch"

    def __init__(self, backbone, config: OnlineRLConfig, rewards: Mapping[str, Any], output_dir: str | Path, *,
                 weights: Mapping[str, float] | None = None, combine: str = "weighted_sum",
                 references: Sequence[np.ndarray] = (), accelerator=None):
        from prefopt.lora_trainer import media_size

        super().__init__(backbone, config, output_dir, accelerator)
        if config.algorithm == "grpo" and not hasattr(backbone, "sampling_sigmas"):
            raise PrefoptError(f"`algorithm: grpo` needs a flow-matching backbone (its SDE log-probabilities are "
                               f"those of a velocity field); `{backbone.name}` predicts noise: use `algorithm: nft` or "
                               "`awm`, which train on the forward process of any backbone.")
        if not rewards:
            raise PrefoptError("online RL needs at least one reward.")
        self.rewards, self.references = dict(rewards), list(references)
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in self.rewards}
        self.combine = combine
        self.size = media_size(backbone, config)
        backbone.check_media_size(*self.size)
        world = self.accelerator.num_processes
        if config.prompts_per_epoch % world:
            raise PrefoptError(f"`prompts_per_epoch` ({config.prompts_per_epoch}) must be a multiple of the number of "
                               f"processes ({world}): each process samples whole groups.")
        local = config.prompts_per_epoch // world * config.group_size
        if local % config.updates_per_epoch:
            raise PrefoptError(f"each process's {local} samples per epoch do not split into `updates_per_epoch` "
                               f"({config.updates_per_epoch}) equal minibatches; change one of them.")
        self.elapsed = self.cpu = 0.0

    def total_steps(self) -> int:
        return self.config.epochs

    def optimizer_steps(self) -> int:
        return self.config.epochs * self.config.updates_per_epoch * self.config.inner_epochs

    # --- public ------------------------------------------------------------------------------------

    def train(self, prompts: Sequence[str], resume: bool = True) -> Path:
        """Train for ``epochs`` (resuming from the latest checkpoint), save and return the LoRA."""
        if not prompts:
            raise PrefoptError("no prompts to train on.")
        c = self.config
        self._encode(list(prompts))
        denoiser = self._prepare_model()
        optimizer, scheduler = self._optimizer(denoiser)
        state = self._resume(denoiser, optimizer, scheduler) if resume else {}
        if not resume:
            self._truncate_metrics(0)
        self.elapsed, self.cpu = float(state.get("elapsed_s", 0.0)), float(state.get("cpu_s", 0.0))
        self._start_trackers()
        with progress_bar(f"online RL ({c.algorithm})", c.epochs, enabled=self.is_main, completed=self.step) as bar:
            while self.step < c.epochs:
                metrics = self._epoch(list(prompts), denoiser, optimizer, scheduler)
                self.step += 1
                self._log(metrics)
                if self.step % c.checkpoint_every == 0 or self.step == c.epochs:
                    self._checkpoint(denoiser, optimizer, scheduler, {"elapsed_s": self.elapsed, "cpu_s": self.cpu})
                bar.advance(reward=metrics["reward"], ratio=metrics.get("ratio", 1.0))
        lora = self._save_final(denoiser)
        self._finish_trackers()
        return lora

    # --- setup -------------------------------------------------------------------------------------

    def _encode(self, prompts: list[str]) -> None:
        """Every prompt's conditioning (and the empty prompt's, for guidance), kept on the host."""
        unique = list(dict.fromkeys(prompts))
        encoded = contract.encode_prompts(self.backbone, unique)
        self.texts = {p: {k: v[i : i + 1].cpu() for k, v in encoded.items()} for i, p in enumerate(unique)}
        guided = self.config.rollout_guidance_scale > 1 and hasattr(self.backbone, "sampling_sigmas")
        self.negative = {k: v.cpu() for k, v in contract.encode_prompts(self.backbone, [""]).items()} if guided else None

    def _conditioning(self, prompts: Sequence[str]) -> tuple[dict, dict | None]:
        conditioning = {k: torch.cat([self.texts[p][k] for p in prompts]) for k in self.texts[prompts[0]]}
        negative = None if self.negative is None else {k: v.expand(len(prompts), *v.shape[1:]).contiguous()
                                                       for k, v in self.negative.items()}
        return conditioning, negative

    # --- an epoch ----------------------------------------------------------------------------------

    def _epoch(self, prompts: list[str], denoiser, optimizer, scheduler) -> dict[str, float]:
        start, cpu_start = time.perf_counter(), time.process_time()
        samples = self._rollouts(denoiser, prompts, self._groups(len(prompts)))
        reward_metrics = self._advantages(samples)
        rollout_s = time.perf_counter() - start
        health = self._updates(denoiser, optimizer, scheduler, samples)
        self.elapsed += time.perf_counter() - start
        self.cpu += time.process_time() - cpu_start  # this process's CPU time, every thread: compute, not waiting
        self._record(samples)
        return {**reward_metrics, **health, "lr": scheduler.get_last_lr()[0], "rollout_s": rollout_s,
                "update_s": time.perf_counter() - start - rollout_s, "elapsed_s": self.elapsed, "cpu_s": self.cpu}

    def _groups(self, count: int) -> list[tuple[int, int]]:
        """(group, prompt index) of this process's groups this epoch: prompts in a seeded order, pass after pass."""
        c, world, rank = self.config, self.accelerator.num_processes, self.accelerator.process_index
        first = self.step * c.prompts_per_epoch
        groups = []
        for g in range(rank, c.prompts_per_epoch, world):
            position = first + g
            order = torch.randperm(count, generator=_generator(c.seed, 7, position // count))
            groups.append((g, int(order[position % count])))
        return groups

    def _rollouts(self, denoiser, prompts: list[str], groups: list[tuple[int, int]]) -> EpochSamples:
        c = self.config
        entries = [(g, p, j) for g, p in groups for j in range(c.group_size)]
        seeds = [training_seed(c.seed, self.step, g, j) for g, _, j in entries]
        texts = [prompts[p] for _, p, _ in entries]
        denoiser.eval()  # no LoRA dropout while sampling: the rollout policy is the one being trained
        if hasattr(self.backbone, "sampling_sigmas"):
            latents, rollout, frames = self._sample_flow(denoiser, texts, seeds)
        else:
            latents, rollout, frames = self._sample_pipeline(texts, seeds)
        denoiser.train()
        rewards = self._score(frames, texts)
        samples = EpochSamples(texts, seeds, torch.tensor([g for g, _, _ in entries]), rewards, frames, rollout)
        if c.algorithm != "grpo":
            samples.forward = self._forward_process(denoiser, samples, latents, entries)
        return samples

    def _sde(self) -> SDE:
        c = self.config
        if c.algorithm != "grpo":
            return SDE(frozenset(), 0.0)
        steps = window_steps(c.sampling_steps, c.sde_window, tuple(c.sde_window_range), _generator(c.seed, 11, self.step))
        return SDE(steps, c.noise_level, c.noise_schedule)

    def _sample_flow(self, denoiser, texts: list[str], seeds: list[int]):
        """The SDE sampler (an ODE for nft/awm), ``micro_batch_size`` samples at a time."""
        c, backbone = self.config, self.backbone
        shape = backbone.latent_shape(*self.size)
        sigmas = backbone.sampling_sigmas(c.sampling_steps, (1, *shape))
        sde, parts = self._sde(), []
        for start in range(0, len(texts), c.micro_batch_size):
            chunk = slice(start, start + c.micro_batch_size)
            generators = [torch.Generator().manual_seed(s) for s in seeds[chunk]]
            noise = torch.cat([torch.randn((1, *shape), generator=gen) for gen in generators])
            conditioning, negative = self._conditioning(texts[chunk])
            with self.accelerator.autocast():
                parts.append(sample(backbone, denoiser, conditioning, negative, noise, sigmas, sde,
                                    c.rollout_guidance_scale, generators))
        rollout = Rollout(torch.cat([p.latents for p in parts]), torch.cat([p.states for p in parts]),
                          torch.cat([p.next_states for p in parts]), torch.cat([p.log_probs for p in parts]),
                          parts[0].steps, sigmas)
        frames = np.concatenate([backbone.decode_latents(p.latents) for p in parts])
        return rollout.latents, (rollout if c.algorithm == "grpo" else None), frames

    def _sample_pipeline(self, texts: list[str], seeds: list[int]):
        """A noise-predicting backbone samples with its pipeline (nft and awm accept any sampler)."""
        c, (frames_count, height, width) = self.config, self.size
        media = []
        for start in range(0, len(texts), c.micro_batch_size):
            media += contract.generate(self.backbone, texts[start : start + c.micro_batch_size],
                                            seeds[start : start + c.micro_batch_size], num_frames=frames_count,
                                            height=height, width=width, num_inference_steps=c.sampling_steps,
                                            guidance_scale=c.rollout_guidance_scale)
        return torch.stack([m.latents for m in media]).float(), None, np.stack([m.frames for m in media])

    def _score(self, frames: np.ndarray, texts: list[str]) -> dict[str, torch.Tensor]:
        scores = {}
        for name, reward in self.rewards.items():
            values = [s.value for s in reward.score(list(frames), texts, self.references)]
            scores[name] = torch.tensor(values, dtype=torch.float64)
        return scores

    def _forward_process(self, denoiser, samples: EpochSamples, latents: torch.Tensor, entries) -> ForwardProcess:
        """nft/awm: each sample noised at ``train_timesteps`` times, and the rollout policy's outputs there."""
        c, backbone = self.config, self.backbone
        noises, times = [], []
        for g, _, j in entries:
            generator = _generator(c.seed, 13, self.step, g, j)
            draws = [(torch.randn(latents.shape[1:], generator=generator),
                      backbone.sample_timesteps(1, generator, latent_shape=(1, *latents.shape[1:])))
                     for _ in range(c.train_timesteps)]
            noises.append(torch.stack([d[0] for d in draws]))
            times.append(torch.cat([d[1] for d in draws]))
        forward = ForwardProcess(latents, torch.stack(noises), torch.stack(times))
        parts = []
        denoiser.eval()
        for start in range(0, len(entries), c.micro_batch_size):
            rows = torch.arange(start, min(start + c.micro_batch_size, len(entries)))
            conditioning, _ = self._conditioning([samples.prompts[i] for i in rows])
            with self.accelerator.autocast():
                parts.append(old_predictions(backbone, denoiser, forward.take(rows), conditioning))
        denoiser.train()
        return ForwardProcess(latents, forward.noise, forward.timesteps,
                              torch.cat([p.old_prediction for p in parts]), torch.cat([p.old_log_prob for p in parts]))

    def _advantages(self, samples: EpochSamples) -> dict[str, float]:
        """Advantages from every process's rewards (each process keeps its own rows); the rewards' statistics."""
        c, gather = self.config, self.accelerator.gather
        everything = {name: gather(values.to(self.accelerator.device)).cpu() for name, values in samples.rewards.items()}
        groups = gather(samples.groups.to(self.accelerator.device)).cpu()
        combined = combine_rewards(everything, self.weights, groups, self.combine)
        advantages = group_advantages(combined, groups, global_std=c.global_std, clip=c.advantage_clip)
        n, rank = len(samples.prompts), self.accelerator.process_index
        samples.advantages = advantages[rank * n : (rank + 1) * n].float()
        samples.combined = combined[rank * n : (rank + 1) * n]
        flat = sum(float(combined[groups == g].std(unbiased=False)) < 1e-12 for g in torch.unique(groups))
        metrics = {"reward": float(combined.mean()), "reward_std": float(combined.std(unbiased=False)),
                   "flat_groups": flat / len(torch.unique(groups))}
        metrics.update({f"reward/{name}": float(values.mean()) for name, values in everything.items()})
        return metrics

    # --- updates -----------------------------------------------------------------------------------

    def _updates(self, denoiser, optimizer, scheduler, samples: EpochSamples) -> dict[str, float]:
        c, n = self.config, len(samples.prompts)
        chunk = n // c.updates_per_epoch
        trained = self._trained_steps(samples.rollout)
        collected = []
        for inner in range(c.inner_epochs):
            order = torch.randperm(n, generator=_generator(c.seed, 17, self.step, inner))
            for index in range(c.updates_per_epoch):
                rows = order[index * chunk : (index + 1) * chunk]
                collected.append(self._optimizer_step(denoiser, optimizer, scheduler, samples, rows, trained))
        health = {k: float(np.mean([h[k] for h in collected if k in h])) for k in collected[0]}
        if "ratio" in collected[0]:  # the first update's ratio: 1 up to rounding, or the rollouts were off-policy
            health["ratio_first_update"] = collected[0]["ratio"]
        return health

    def _trained_steps(self, rollout: Rollout | None) -> list[int]:
        """grpo: the SDE steps trained this epoch (``timestep_fraction`` of them, drawn at random)."""
        if rollout is None:
            return []
        steps = list(rollout.steps)
        keep = max(1, round(self.config.timestep_fraction * len(steps)))
        chosen = torch.randperm(len(steps), generator=_generator(self.config.seed, 19, self.step))[:keep]
        return sorted(steps[i] for i in chosen.tolist())

    def _optimizer_step(self, denoiser, optimizer, scheduler, samples: EpochSamples, rows: torch.Tensor,
                        trained: list[int]) -> dict[str, float]:
        c = self.config
        collected = []
        for start in range(0, len(rows), c.micro_batch_size):
            part = rows[start : start + c.micro_batch_size]
            micro = self._micro(samples, part)
            share = len(part) / len(rows)
            with self.accelerator.autocast():
                if c.algorithm == "grpo":
                    health = grpo_update(self.backbone, denoiser, micro, trained, self._sde(), c, share,
                                         self._backward)
                else:
                    update = nft_update if c.algorithm == "nft" else awm_update
                    health = update(self.backbone, denoiser, micro, c, share, self._backward)
            collected.append((share, health))
        params = adapter_parameters(denoiser, POLICY_ADAPTER)
        self._average_gradients(params)
        metrics = {k: sum(s * h[k] for s, h in collected) for k in collected[0][1]}
        if c.max_grad_norm > 0:
            metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return metrics

    def _micro(self, samples: EpochSamples, rows: torch.Tensor) -> Micro:
        conditioning, negative = self._conditioning([samples.prompts[i] for i in rows])
        micro = Micro(conditioning, negative, samples.advantages[rows])
        if samples.rollout is not None:
            r = samples.rollout
            micro.rollout = Rollout(r.latents[rows], r.states[rows], r.next_states[rows], r.log_probs[rows], r.steps,
                                    r.sigmas)
        if samples.forward is not None:
            micro.forward = samples.forward.take(rows)
        return micro

    def _backward(self, loss: torch.Tensor) -> None:
        self._check_finite(loss, "Lower `learning_rate`, or raise `kl_beta`.")
        loss.backward()

    def _average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Each process's gradient of its own samples, averaged over processes (every process holds equal shares)."""
        world = self.accelerator.num_processes
        if world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= world
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
            offset += g.numel()

    # --- records -----------------------------------------------------------------------------------

    def _record(self, samples: EpochSamples) -> None:
        """The epoch's rollouts (every process's, on the main process) as JSON, and the first group as a strip."""
        from accelerate.utils import gather_object

        from prefopt.report import frame_strip

        rows = [{"prompt": p, "seed": s, "group": int(g), "reward": float(r), "advantage": float(a),
                 **{name: float(v[i]) for name, v in samples.rewards.items()}}
                for i, (p, s, g, r, a) in enumerate(zip(samples.prompts, samples.seeds, samples.groups,
                                                         samples.combined, samples.advantages, strict=True))]
        rows = gather_object(rows) if self.accelerator.num_processes > 1 else rows
        if not self.is_main:
            return
        write_json(self.folder.rollouts(self.step + 1), {"epoch": self.step + 1, "samples": rows})
        first = samples.groups == samples.groups[0]
        middle = [video[len(video) // 2] for video in samples.frames[first.numpy()]]
        frame_strip(self.folder.rollout_strip(self.step + 1), np.stack(middle), frames=len(middle))

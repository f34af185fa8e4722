"""Pretrain the miniature video model on the miniature world (CPU, 90 minutes on 2 cores).

    python -m prefopt_plugins.miniature.pretrain --out plugins/miniature/weights/model --minutes 90

Each step draws a batch of clips of *training* identities (never the held-out ones) doing random actions
over random backgrounds, with the action's prompt (the identity is never named), and trains the pixel-space
transformer with the flow-matching objective prefopt's backbone defines (target ε − x₀ at σ drawn by the
backbone). Deterministic from ``--seed`` and resumable: a checkpoint every ``--checkpoint-minutes`` under
``<out>.work/``, and a re-run continues from the newest readable one. At the end the pipeline is saved with
``save_pretrained`` (loaded back by ``from_pretrained``) beside ``pretraining.json`` (settings, steps, time,
the loss curve, and the commands that retrain the same model step for step).

The shipped model was trained in two phases: 60 minutes reading 16 prompt tokens (which cut both walking
prompts to the same text), then 30 more minutes reading 40 (`prompt_phases` in its ``pretraining.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch

from prefopt.checkpoint import (
    apply_checkpoint,
    newest_readable_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from prefopt.files import write_folder, write_json
from prefopt.progress import configure_logging, progress_bar
from prefopt_plugins.miniature.model import (
    PROMPT_TOKENS,
    MiniatureModelConfig,
    miniature_backbone,
    miniature_pipeline,
)
from prefopt_plugins.miniature.world import ACTIONS, World

logger = logging.getLogger("prefopt_plugins.miniature.pretrain")  # also when run as __main__
# Checkpoints from before phases were recorded: the shipped model's first 60 minutes, at 16 prompt tokens.
LEGACY_PHASE = {"from_step": 0, "max_sequence_length": 16}
MAX_STEPS = 100_000  # the default: the time budget stops the run
LEGACY_START = {"init_from": None, "text_tokens": "character", "new_text_encoder": False}  # before these flags


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="Folder the trained pipeline is saved to.")
    parser.add_argument("--minutes", type=float, default=60.0, help="Training time budget (wall clock).")
    parser.add_argument("--max-steps", type=int, default=MAX_STEPS, help="Stop after this many steps at the latest.")
    parser.add_argument("--batch", type=int, default=16, help="Clips per step.")
    parser.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate (after a 200-step warmup).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the model's initialisation and the data order.")
    parser.add_argument("--world-seed", type=int, default=0, help="Seed of the world (its identities).")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0, help="Checkpoint interval.")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads.")
    parser.add_argument("--max-sequence-length", type=int, default=PROMPT_TOKENS,
                        help="Prompt tokens the model sees (characters: the tokenizer spells its input).")
    parser.add_argument("--text-tokens", choices=("character", "word"), default="character",
                        help="The Llama encoder's tokens: characters (the shipped model) or the prompts' words.")
    parser.add_argument("--init-from", default=None,
                        help="Start from this saved pipeline (a folder or package:// path): its transformer and text encoders.")
    parser.add_argument("--new-text-encoder", action="store_true",
                        help="With --init-from: a new seeded Llama encoder even where the tokens are the saved model's.")
    parser.add_argument("--small", action="store_true", help="A tiny model (tests).")
    return parser.parse_args(argv)


def model_config(args) -> MiniatureModelConfig:
    if args.small:
        return MiniatureModelConfig(heads=2, head_dim=16, double_blocks=1, single_blocks=1, text_dim=16, seed=args.seed,
                                    text_tokens=args.text_tokens)
    return MiniatureModelConfig(seed=args.seed, text_tokens=args.text_tokens)


def _start_from(pipe, folder: str, new_text_encoder: bool) -> None:
    """Start from a saved pipeline: its transformer and CLIP encoder, and its Llama encoder where the tokens are the
    same and ``new_text_encoder`` is not set (otherwise the Llama encoder is the new, seeded one: the transformer
    learns to read it)."""
    saved = miniature_backbone(folder).pipe  # prefopt's loading: offline unless allowed, package:// paths
    pipe.transformer.load_state_dict(saved.transformer.state_dict())
    pipe.text_encoder_2.load_state_dict(saved.text_encoder_2.state_dict())
    keep = saved.tokenizer.get_vocab() == pipe.tokenizer.get_vocab() and not new_text_encoder
    if keep:
        pipe.text_encoder.load_state_dict(saved.text_encoder.state_dict())
    logger.info("starting from %s (%s)", folder, "every part" if keep else "with a new Llama encoder")


def batch(world: World, step: int, size: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Clips of training identities doing random actions: ``[B, 3, F, H, W]`` in [-1, 1], and the actions."""
    rng = np.random.default_rng([seed, step])
    identities = rng.choice(world.train_identities, size)
    actions = [list(ACTIONS)[i] for i in rng.integers(0, len(ACTIONS), size)]
    clips = np.stack([world.clip(int(i), a, int(rng.integers(1 << 30))) for i, a in zip(identities, actions)])
    pixels = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    return pixels, actions


def train(args) -> dict:
    torch.set_num_threads(args.threads)
    out, work = Path(args.out), Path(f"{args.out}.work")
    world = World(seed=args.world_seed)
    pipe = miniature_pipeline(model_config(args))
    if args.init_from:  # a checkpoint to resume from, below, takes precedence for the transformer
        _start_from(pipe, args.init_from, args.new_text_encoder)
    backbone = miniature_backbone(pipeline=pipe, max_sequence_length=args.max_sequence_length)
    prompts = {a: backbone.encode_prompts([world.prompt(a)]) for a in ACTIONS}  # 7 fixed sentences
    transformer = backbone.denoiser.train().requires_grad_(True)  # the backbone loads it frozen, for LoRA
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=args.lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 200))
    start = _start(args)
    step, losses, seconds, phases = _resume(work, transformer, optimizer, scheduler, start)
    phases, first_step = _with_phase(phases, step, args.max_sequence_length), step
    started, last_checkpoint = time.monotonic() - seconds, time.monotonic()
    generator = torch.Generator().manual_seed(args.seed)
    budget = args.minutes * 60
    unit, total, counted = _bar_unit(args)
    shown = counted(step, seconds)
    with progress_bar(f"pretraining the miniature model ({unit})", total, completed=shown) as bar:
        while step < args.max_steps and time.monotonic() - started < budget:
            losses.append(_train_step(backbone, world, step, args, prompts, generator, optimizer, scheduler))
            step += 1
            done = counted(step, time.monotonic() - started)
            bar.advance(done - shown, step=step, loss=float(np.mean(losses[-50:])))
            shown = done
            if time.monotonic() - last_checkpoint > args.checkpoint_minutes * 60:
                _checkpoint(work, step, transformer, optimizer, scheduler, losses, time.monotonic() - started, phases,
                            start)
                last_checkpoint = time.monotonic()
    seconds = time.monotonic() - started
    if step > first_step:  # a re-run of a finished budget only saves the pipeline and the record again
        _checkpoint(work, step, transformer, optimizer, scheduler, losses, seconds, phases, start)
    transformer.eval()
    write_folder(out, pipe.save_pretrained, replaces="model_index.json")
    record = {"steps": step, "seconds": round(seconds, 1), "batch": args.batch, "lr": args.lr, "seed": args.seed,
              "world_seed": args.world_seed, "prompt_phases": phases, **start, "model": dataclasses.asdict(model_config(args)),
              "parameters": sum(p.numel() for p in transformer.parameters()),
              "loss_every_50_steps": [round(float(np.mean(losses[i:i + 50])), 5) for i in range(0, len(losses), 50)],
              "command": _command(args), "reproduce": _reproduce(args, phases, step)}
    write_json(out / "pretraining.json", record)
    logger.info("saved the miniature model to %s after %d steps (%.0f s)", out, step, seconds)
    return record


def _bar_unit(args):
    """What the bar counts, so that its ETA is when the run stops: steps when ``--max-steps`` is given (the
    reproduce commands), else seconds of the time budget."""
    if args.max_steps != MAX_STEPS:
        return "steps", args.max_steps, lambda step, seconds: step
    return "seconds", int(args.minutes * 60), lambda step, seconds: int(seconds)


def _command(args) -> str:
    return (f"python -m prefopt_plugins.miniature.pretrain --out {args.out} --minutes {args.minutes:g} "
            f"--seed {args.seed} --world-seed {args.world_seed} --max-sequence-length {args.max_sequence_length}"
            + _model_flags(args))


def _model_flags(args) -> str:
    return _flags(_start(args)) + (" --small" if args.small else "")


def _flags(start: dict) -> str:
    return ((f" --text-tokens {start['text_tokens']}" if start["text_tokens"] != "character" else "")
            + (f" --init-from {start['init_from']}" if start["init_from"] else "")
            + (" --new-text-encoder" if start["new_text_encoder"] else ""))


def _reproduce(args, phases: list[dict], step: int) -> list[str]:
    """Commands that retrain this model step for step, one per phase, run in turn: the time budget is what
    stopped each phase here, and another machine would take a different number of steps in the same time."""
    ends = [phase["from_step"] for phase in phases[1:]] + [step]
    return [f"python -m prefopt_plugins.miniature.pretrain --out {args.out} --minutes 100000 --max-steps {end} "
            f"--batch {args.batch} --lr {args.lr:g} --seed {args.seed} --world-seed {args.world_seed} "
            f"--max-sequence-length {phase['max_sequence_length']}" + _model_flags(args)
            for phase, end in zip(phases, ends)]


def _with_phase(phases: list[dict], step: int, max_sequence_length: int) -> list[dict]:
    """The prompt-length phases, with a new one from ``step`` if this invocation changes the length."""
    phase = {"from_step": step, "max_sequence_length": max_sequence_length}
    if not phases:
        return [phase]
    if phases[-1]["max_sequence_length"] == max_sequence_length:
        return phases
    if phases[-1]["from_step"] == step:  # the previous length never trained a step: replace it
        return [*phases[:-1], phase]
    return [*phases, phase]


def _train_step(backbone, world, step, args, prompts, generator, optimizer, scheduler) -> float:
    """One flow-matching step on a fresh batch (noise and σ seeded by (seed, step), so a resume is exact)."""
    generator.manual_seed(args.seed * 1_000_003 + step)
    pixels, actions = batch(world, step, args.batch, args.seed)
    conditioning = {k: torch.cat([prompts[a][k] for a in actions]) for k in prompts[actions[0]]}
    sigmas = backbone.sample_timesteps(len(actions), generator)
    noise = torch.randn(pixels.shape, generator=generator)
    output = backbone.forward_train(pixels, noise, sigmas, conditioning)
    loss = torch.nn.functional.mse_loss(output.prediction.float(), output.target.float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(backbone.denoiser.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    return loss.item()


def _start(args) -> dict:
    """What the transformer started from and reads: a checkpoint only continues the same."""
    return {"init_from": args.init_from, "text_tokens": args.text_tokens, "new_text_encoder": args.new_text_encoder}


def _checkpoint(work: Path, step, transformer, optimizer, scheduler, losses, seconds, phases, start) -> None:
    state = {k: v.detach().clone() for k, v in transformer.state_dict().items()}
    save_checkpoint(work, step, {"transformer": state}, optimizer, scheduler,
                    {"losses": losses, "seconds": seconds, "prompt_phases": phases, "start": start})
    prune_checkpoints(work, 2)


def _resume(work: Path, transformer, optimizer, scheduler, start: dict) -> tuple[int, list[float], float, list[dict]]:
    """Step, losses, seconds so far and the prompt-length phases; a checkpoint of another start is refused (its
    transformer learned to read other text encoders)."""
    checkpoint = newest_readable_checkpoint(work)
    if checkpoint is None:
        return 0, [], 0.0, []
    saved = checkpoint.state.get("start", LEGACY_START)
    if saved != start:
        raise SystemExit(f"{checkpoint.path} continues a run started with{_flags(saved) or ' the defaults'}, not "
                         f"with{_flags(start) or ' the defaults'}: "
                         f"run with the same flags, or remove `{work}` to start over.")
    transformer.load_state_dict(checkpoint.loras["transformer"])
    apply_checkpoint(checkpoint, optimizer, scheduler)
    logger.info("resuming pretraining from %s (step %d)", checkpoint.path, checkpoint.state["step"])
    state = checkpoint.state
    phases = state.get("prompt_phases", [LEGACY_PHASE])
    return int(state["step"]), list(state["losses"]), float(state["seconds"]), list(phases)


def main(argv=None) -> None:
    configure_logging()
    train(parse_args(argv))


if __name__ == "__main__":
    main()

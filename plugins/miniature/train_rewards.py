"""Training the miniature world's reward networks (minutes on 2 CPU cores)::

    python -m prefopt_plugins.miniature.train_rewards --out DIR [--minutes 4] [--max-steps N] [--seed 0]

* the identity net: an additive angular margin (ArcFace) loss and one linear probe per attribute, on frames and
  stills of the world's *training* identities, two thirds of them blurred or noised as generated frames are;
* the action net: a small 3D CNN over 8 frames, its probabilities calibrated by temperature scaling on clips of
  held-out identities.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prefopt_plugins.miniature.nets import (
    EMBEDDING,
    WEIGHTS,
    ActionNet,
    IdentityNet,
    save_net,
    to_tensor,
)
from prefopt_plugins.miniature.world import ACTIONS, ATTRIBUTE_SIZES, World

logger = logging.getLogger("prefopt_plugins.miniature.train_rewards")  # also when run as __main__
PROBE_SCALE = 8.0  # unit-norm embeddings give logits in [−|w|, |w|]; scaled, a probe's softmax can be confident

def _identity_batch(world: World, rng: np.random.Generator, clips: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every frame of ``clips`` random clips, plus one still per clip, of training identities; two thirds of the
    images blurred or noised, as generated frames are (so that the embedding does not rest on crisp pixels)."""
    ids = rng.choice(world.train_identities, clips)
    actions = rng.choice(list(ACTIONS), clips)
    frames = [world.clip(int(i), str(a), int(rng.integers(1 << 30))) for i, a in zip(ids, actions)]
    stills = [world.still(int(i), int(rng.integers(1 << 30))) for i in ids]
    images = to_tensor(np.concatenate([np.concatenate(frames), np.stack(stills)]))
    labels = np.concatenate([np.repeat(ids, world.frames), ids])
    return _degrade(images, rng), torch.from_numpy(labels).long()


def _degrade(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Per image, one of: unchanged, a 3 × 3 box blur, Gaussian noise (σ 0.08 of the [−1, 1] range)."""
    blurred = nn.functional.avg_pool2d(nn.functional.pad(images, (1, 1, 1, 1), mode="replicate"), 3, 1)
    noisy = (images + torch.from_numpy(rng.normal(0, 0.08, images.shape)).float()).clamp(-1, 1)
    pick = torch.from_numpy(rng.integers(0, 3, len(images)))[:, None, None, None]
    return torch.where(pick == 1, blurred, torch.where(pick == 2, noisy, images))


def arcface_logits(embeddings, weight, labels, scale: float = 16.0, margin: float = 0.3) -> torch.Tensor:
    """s·cos(θ + m) for the true class, s·cos θ for the others (Deng et al., 2019). Past θ = π − m, cos(θ + m)
    would rise again and reward pushing an embedding *away* from its class (a first version collapsed so:
    every cosine −1); there ArcFace's linear continuation cos θ − m·sin m is used instead."""
    cosine = embeddings @ nn.functional.normalize(weight, dim=-1).T
    theta = torch.acos(cosine.clamp(-1 + 1e-6, 1 - 1e-6))
    target = torch.where(theta < np.pi - margin, torch.cos(theta + margin), cosine - margin * np.sin(margin))
    one_hot = nn.functional.one_hot(labels, cosine.shape[1]).bool()
    return scale * torch.where(one_hot, target, cosine)


def _train_for(minutes: float, max_steps: int | None, loss_fn, optimizer, label: str) -> dict:
    """Optimizer steps on fresh batches until the time budget or ``max_steps`` is spent; returns steps and
    seconds. (A time budget gives fewer steps on a busier machine; ``max_steps`` reproduces a run.)"""
    started, step = time.monotonic(), 0
    while time.monotonic() - started < minutes * 60 and (max_steps is None or step < max_steps):
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 50 == 0:
            logger.info("%s: step %d, loss %.3f", label, step, loss.item())
    return {"steps": step, "seconds": round(time.monotonic() - started, 1)}


def train_identity(world: World, minutes: float, seed: int, max_steps: int | None = None) -> tuple[IdentityNet, dict]:
    """ArcFace over the training identities, plus one linear probe per attribute on the embedding. ArcFace
    alone (two 4-minute runs) separated stills from clip frames instead of identities (docs/miniature.md);
    the attribute probes give every image a signal that holds for identities never seen in training,
    because a held-out identity is a new combination of attribute values that were all seen."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 1])
    net, classes = IdentityNet(), torch.nn.Parameter(torch.randn(world.num_identities, EMBEDDING) * 0.01)
    probes = nn.ModuleList(nn.Linear(EMBEDDING, size) for size in ATTRIBUTE_SIZES)
    codes = torch.tensor([world.attribute_codes(i) for i in range(world.num_identities)])
    # 1e-3, half the rate of the collapsed ArcFace-only runs.
    optimizer = torch.optim.AdamW([*net.parameters(), *probes.parameters(), classes], lr=1e-3,
                                  weight_decay=5e-4)

    def loss() -> torch.Tensor:
        images, labels = _identity_batch(world, rng, 12)
        embeddings = net(images)
        arcface = nn.functional.cross_entropy(arcface_logits(embeddings, classes, labels), labels)
        attributes = sum(nn.functional.cross_entropy(probe(embeddings * PROBE_SCALE), codes[labels, k])
                         for k, probe in enumerate(probes))
        return arcface + attributes

    record = _train_for(minutes, max_steps, loss, optimizer, "identity net")
    net.eval()
    return net, {**record, **evaluate_identity(net, world)}


@torch.no_grad()
def evaluate_identity(net: IdentityNet, world: World, clips_per_identity: int = 2) -> dict:
    """On the held-out identities: the reference is the mean embedding of two stills; every frame of unseen
    clips is matched against all held-out references (rank-1 accuracy), and same-vs-other cosines."""
    held = list(world.held_out_identities)
    references = torch.stack([net(to_tensor(np.stack([world.still(i, s) for s in (0, 1)]))).mean(0) for i in held])
    references = nn.functional.normalize(references, dim=-1)
    correct = total = 0
    same, other = [], []
    for row, identity in enumerate(held):
        for k in range(clips_per_identity):
            action = list(ACTIONS)[(row + k) % len(ACTIONS)]
            sims = net(to_tensor(world.clip(identity, action, 10_000 + k))) @ references.T
            correct += int((sims.argmax(1) == row).sum())
            total += sims.shape[0]
            same.append(sims[:, row].mean().item())
            other.append(torch.cat([sims[:, :row], sims[:, row + 1:]], 1).mean().item())
    return {"held_out_identities": len(held), "rank1_accuracy": round(correct / total, 4),
            "mean_cosine_same": round(float(np.mean(same)), 4), "mean_cosine_other": round(float(np.mean(other)), 4)}


def _action_batch(world: World, rng: np.random.Generator, size: int, identities) -> tuple[torch.Tensor, torch.Tensor]:
    labels = rng.integers(0, len(ACTIONS), size)
    ids = rng.choice(identities, size)
    clips = np.stack([world.clip(int(i), list(ACTIONS)[a], int(rng.integers(1 << 30))) for i, a in zip(ids, labels)])
    return to_tensor(clips).movedim(1, 2), torch.from_numpy(labels).long()  # [N, 3, F, H, W]


def train_action(world: World, minutes: float, seed: int,
                 max_steps: int | None = None) -> tuple[ActionNet, float, dict]:
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 2])
    net = ActionNet()
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)

    def loss() -> torch.Tensor:
        clips, labels = _action_batch(world, rng, 24, world.train_identities)
        return nn.functional.cross_entropy(net(clips), labels)

    record = _train_for(minutes, max_steps, loss, optimizer, "action net")
    net.eval()
    temperature, metrics = calibrate_action(net, world, seed)
    return net, temperature, {**record, **metrics}


@torch.no_grad()
def calibrate_action(net: ActionNet, world: World, seed: int) -> tuple[float, dict]:
    """Temperature fitted on one half of held-out-identity clips (negative log-likelihood, grid search);
    accuracy and calibration reported on the other half."""
    rng = np.random.default_rng([seed, 3])
    fit_clips, fit_labels = _action_batch(world, rng, 140, world.held_out_identities)
    test_clips, test_labels = _action_batch(world, rng, 140, world.held_out_identities)
    fit_logits, test_logits = net(fit_clips), net(test_clips)
    grid = np.exp(np.linspace(np.log(0.2), np.log(5.0), 61))
    nll = [float(nn.functional.cross_entropy(fit_logits / t, fit_labels)) for t in grid]
    temperature = float(grid[int(np.argmin(nll))])
    probs = torch.softmax(test_logits / temperature, dim=-1)
    confidence, predicted = probs.max(1)
    return temperature, {"held_out_clips": len(test_labels), "accuracy": round(float((predicted == test_labels).float().mean()), 4),
                         "temperature": round(temperature, 3),
                         "mean_confidence": round(float(confidence.mean()), 4),
                         "test_nll": round(float(nn.functional.cross_entropy(test_logits / temperature, test_labels)), 4)}


def main(argv=None) -> None:
    from prefopt.progress import configure_logging

    parser = argparse.ArgumentParser(description="Train the miniature world's identity and action models.")
    parser.add_argument("--out", default=str(WEIGHTS), help="Folder for identity.* and action.*.")
    parser.add_argument("--minutes", type=float, default=4.0, help="Training time per model.")
    parser.add_argument("--max-steps", type=int, help="Stop after this many steps at the latest (reproducible).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--only", choices=["identity", "action"], help="Train one of the two models.")
    args = parser.parse_args(argv)
    configure_logging()
    torch.set_num_threads(2)
    out, world = Path(args.out), World(seed=args.world_seed)
    out.mkdir(parents=True, exist_ok=True)
    steps = f"--max-steps {args.max_steps} " if args.max_steps else ""
    command = {"command": f"python -m prefopt_plugins.miniature.train_rewards --out {args.out} --minutes {args.minutes} "
                          f"{steps}--seed {args.seed} --world-seed {args.world_seed}"}
    if args.only in (None, "identity"):
        net, record = train_identity(world, args.minutes, args.seed, args.max_steps)
        save_net(net, out / "identity", {**record, **command})
        logger.info("identity net: %s", record)
    if args.only in (None, "action"):
        net, temperature, record = train_action(world, args.minutes, args.seed, args.max_steps)
        save_net(net, out / "action", {**record, **command, "temperature": temperature})
        logger.info("action net: %s", record)


if __name__ == "__main__":
    main()

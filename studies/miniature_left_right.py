"""Does the miniature model fail to tell walking left from right because of its text encoding? (issue #25 item 4)

    python studies/miniature_left_right.py pretrain   # the arms, two at a time, one thread each (~35 min per pair)
    python studies/miniature_left_right.py evaluate   # the shipped model and the arms on fresh seeds

Why it might: with a two-layer Llama, HunyuanVideo's pipeline reads the third-to-last hidden state, which is the
embedding layer (no positions), and the transformer rotates only video tokens: the Llama stream reaches the model
as a bag of characters (tests/plugins/miniature/test_model.py, `test_the_transformer_reads_the_prompt_as_a_bag_of_tokens`),
where "…the left" and "…the right" share 24 of their 27 and 28 tokens. Only the pooled CLIP vector (8 numbers per prompt,
added to the timestep embedding) keeps word order; it is the saved model's in every arm.

Design, fixed before any arm was trained (commit b89d79e):

* Models. B: the shipped model. C: B trained 1,500 more steps with its own (character) encoding. W: B's transformer
  and CLIP encoder trained 1,500 steps with word tokens (a new frozen random Llama of the same size, one token per
  word: "left" and "right" one token each). Both arms: `--seed 1` (batches and noise the shipped model never drew,
  the same for both arms), batch 16, lr 5e-4 with a new 200-step warmup, 40 prompt tokens.
* What it can and cannot say. One training run per arm: the intervals cover the clips of that one model, not the
  spread between training runs, so the contrasts are single-run observations about this encoding change, not
  tested claims about word tokens in general. The shipped model is not replaced in this study whatever it shows:
  every study's numbers rest on it, and a new world model would mean rerunning them.

Amended after a review, while C and W trained and before any evaluation ran (the commit after 207d5c9):

* A third arm, R: like C but with a new random Llama encoder (`--new-text-encoder`, character tokens), so that W
  against R changes the tokens alone (both arms must learn to read a new encoder); W against C is reported too.
* Evaluation. Each model generates one clip per walking prompt from each of 128 seeds, 50,000–50,127, and 16
  clips per other prompt (seeds 50,000–50,015); no training drew these seeds (pretraining noise comes from
  generators seeded seed·1,000,003 + step: 0–7,518 for B, 1,000,003–1,001,502 for the arms); 20 Euler steps, no
  guidance.
* Measure. A clip's direction is right when the judge (the action classifier trained from another seed,
  docs/miniature.md) gives the prompted walk more probability than the other walk. The seed is the unit: its
  left and right clips share their noise, so its score is the fraction of its two clips that go the right way
  (0.5 is chance; a model that ignores the word scores 0.5 on every seed). The main action net's accuracy is a
  second opinion; each prompt's mean judge probability (prompt following) shows what else changed.
* Claims, one-sided, Holm over the six: B, C, R, W each tell left from right (seeds with both clips right
  outnumber seeds with both wrong: exact sign test); W beats R and W beats C (per-seed differences: exact sign
  test). Estimates with two-sided 95 % t-intervals over the 128 seeds, and the smallest effect each test would
  detect (80 % power at α / 6).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from study_stats import holm  # studies/ is on the path when a study runs as a script

SHIPPED = "package://prefopt_plugins/miniature/weights/model"
OUT = Path("runs/left-right")
ARMS = {"character": [], "word": ["--text-tokens", "word"], "redrawn": ["--new-text-encoder"]}
LETTERS = {"character": "C", "word": "W", "redrawn": "R"}
STEPS, WALK_SEEDS, OTHER_SEEDS = 1500, list(range(50_000, 50_128)), list(range(50_000, 50_016))
WALKS = ("walk_left", "walk_right")
WEIGHTS = Path(__file__).resolve().parents[1] / "plugins" / "miniature" / "weights"
NETS = {"judge": WEIGHTS / "judge" / "action", "action net": WEIGHTS / "action"}


def pretrain() -> None:
    """The arms not trained yet, two at a time with one thread each (the machine has two cores); resumable."""
    todo = [arm for arm in ARMS if not _trained(arm)]
    for pair in (todo[i:i + 2] for i in range(0, len(todo), 2)):
        threads = str(2 // len(pair))
        processes = [subprocess.Popen([
            sys.executable, "-m", "prefopt_plugins.miniature.pretrain", "--out", str(OUT / arm), "--minutes", "100000",
            "--max-steps", str(STEPS), "--seed", "1", "--threads", threads, "--init-from", SHIPPED, *ARMS[arm]])
            for arm in pair]
        codes = [process.wait() for process in processes]
        if any(codes):
            raise SystemExit(f"pretraining {pair} exited with {codes}; a re-run resumes from the arms' checkpoints")


def _trained(arm: str) -> bool:
    record = OUT / arm / "pretraining.json"
    return record.is_file() and json.loads(record.read_text())["steps"] >= STEPS


def models() -> dict[str, str]:
    return {"B (shipped)": SHIPPED, **{f"{LETTERS[arm]} ({arm}, +{STEPS} steps)": str(OUT / arm) for arm in ARMS}}


def generate(model: str) -> dict[str, np.ndarray]:
    """Action → uint8 clips ``[N, 8, 32, 32, 3]`` generated from its prompt (walks: one per walk seed)."""
    from prefopt_plugins.miniature.model import miniature_backbone
    from prefopt_plugins.miniature.world import ACTIONS

    backbone = miniature_backbone(model)
    clips = {}
    for action, prompt in ACTIONS.items():
        seeds = WALK_SEEDS if action in WALKS else OTHER_SEEDS
        clips[action] = np.stack([m.frames for start in range(0, len(seeds), 32) for m in backbone.generate(
            [prompt] * len(seeds[start:start + 32]), seeds[start:start + 32], num_frames=8, height=32, width=32,
            num_inference_steps=20, guidance_scale=1.0)])
    return clips


@functools.cache
def action_net(weights: Path):
    """The miniature action reward on these weights, loaded once per study."""
    from prefopt.config import parse
    from prefopt.plugins import get_registry

    entry = get_registry().get("rewards", "miniature-action")
    return entry.cls(parse(entry.config_class, {"weights": str(weights)}))


def probabilities(weights: Path, clips: np.ndarray) -> np.ndarray:
    """``[N, 7]`` calibrated action probabilities, as the miniature action reward computes them."""
    return np.stack([action_net(weights).probabilities(clip) for clip in clips])


def seed_scores(probs: dict[str, np.ndarray]) -> np.ndarray:
    """Per seed, the fraction of its two walking clips (left prompt, right prompt) whose prompted walk gets more
    probability than the other walk: 0, 0.5 or 1."""
    from prefopt_plugins.miniature.world import ACTIONS

    left, right = list(ACTIONS).index("walk_left"), list(ACTIONS).index("walk_right")
    left_right = probs["walk_left"][:, left] > probs["walk_left"][:, right]
    right_right = probs["walk_right"][:, right] > probs["walk_right"][:, left]
    return (left_right.astype(float) + right_right) / 2


def measure(model: str) -> dict:
    from prefopt_plugins.miniature.world import ACTIONS

    clips = generate(model)
    found = {"strip": {a: clips[a][0].tolist() for a in WALKS}}
    for name, weights in NETS.items():
        probs = {action: probabilities(weights, clips[action]) for action in ACTIONS}
        found[name] = {"seed_scores": seed_scores(probs).tolist(),
                       "following": {a: float(probs[a][:, i].mean()) for i, a in enumerate(ACTIONS)}}
    return found


def claims(results: dict[str, dict]) -> list[dict]:
    """The six claims on the judge's per-seed scores: every model tells left from right, W beats R, W beats C."""
    from study_stats import ALPHA, detectable_effect, interval

    scores = {name.split(" (")[0]: np.asarray(found["judge"]["seed_scores"]) for name, found in results.items()}
    tests = [(f"{name} tells left from right", values - 0.5) for name, values in scores.items()]
    tests += [(f"W beats {other} on the same seeds", scores["W"] - scores[other]) for other in ("R", "C")]
    rows = []
    for claim, values in tests:
        mean, half = interval(values)
        rows.append({"claim": claim, "estimate": mean, "interval": [mean - half, mean + half], "p": _sign_test(values),
                     "detectable": detectable_effect(values, alpha=ALPHA / len(tests)),
                     "seeds up, down": [int((values > 0).sum()), int((values < 0).sum())]})
    for row, holds in zip(rows, holm([row["p"] for row in rows])):
        row["holds"] = holds
    return rows


def _sign_test(values: np.ndarray) -> float:
    """One-sided exact sign test: P(at least this many positive among the non-zero values | each side ½)."""
    from scipy.stats import binomtest

    up, down = int((values > 0).sum()), int((values < 0).sum())
    return float(binomtest(up, up + down, 0.5, alternative="greater").pvalue) if up + down else 1.0


def figure(results: dict[str, dict], path: Path) -> None:
    """Rows: each model's walk-left clip, then its walk-right clip, from seed 50,000: 8 frames, 4× pixels."""
    from prefopt.media import write_media

    rows = [np.concatenate(list(np.asarray(found["strip"][a], dtype=np.uint8)), axis=1)
            for found in results.values() for a in WALKS]
    strip = np.concatenate(rows, axis=0)
    write_media(path, strip.repeat(4, axis=0).repeat(4, axis=1)[None])


def evaluate() -> None:
    missing = [arm for arm in ARMS if not _trained(arm)]
    if missing:
        raise SystemExit(f"arms not trained yet: {', '.join(missing)}; run `python {__file__} pretrain` first")
    results = {}
    for name, model in models().items():
        print(f"evaluating {name}", flush=True)
        results[name] = measure(model)
    rows = claims(results)
    (OUT / "results.json").write_text(json.dumps({"results": results, "claims": rows}, indent=1))
    figure(results, Path("docs/images/miniature_left_right.png"))
    print(report(results, rows))


def report(results: dict[str, dict], rows: list[dict]) -> str:
    from prefopt_plugins.miniature.world import ACTIONS

    lines = ["| claim | estimate | 95 % interval | seeds up / down | p (one-sided) | detectable | holds after Holm |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        low, high = row["interval"]
        up, down = row["seeds up, down"]
        lines.append(f"| {row['claim']} | {row['estimate']:+.3f} | [{low:+.3f}, {high:+.3f}] | {up} / {down} | "
                     f"{row['p']:.3g} | {row['detectable']:.3f} | {'yes' if row['holds'] else 'no'} |")
    lines += ["", "| model | direction, judge | direction, action net | " + " | ".join(ACTIONS) + " |",
              "|---|---|---|" + "---|" * len(ACTIONS)]
    for name, found in results.items():
        following = " | ".join(f"{found['judge']['following'][a]:.2f}" for a in ACTIONS)
        lines.append(f"| {name} | {np.mean(found['judge']['seed_scores']):.3f} | "
                     f"{np.mean(found['action net']['seed_scores']):.3f} | {following} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("pretrain", "evaluate"))
    {"pretrain": pretrain, "evaluate": evaluate}[parser.parse_args(argv).stage]()


if __name__ == "__main__":
    main()

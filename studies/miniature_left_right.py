"""Does the miniature model fail to tell walking left from right because of its text encoding? (issue #25 item 4)

    python studies/miniature_left_right.py pretrain   # two arms in parallel, one thread each (~40 CPU-minutes)
    python studies/miniature_left_right.py evaluate   # the shipped model and both arms on fresh seeds

Why it might: with a two-layer Llama, HunyuanVideo's pipeline reads the third-to-last hidden state, which is the
embedding layer (no positions), and the transformer rotates only video tokens: the model reads its prompt as a
bag of characters (tests/plugins/miniature/test_model.py, `test_the_transformer_reads_the_prompt_as_a_bag_of_tokens`),
where "…the left" and "…the right" differ in a few letters among ~27 shared ones.

Design, fixed before any arm was trained (this docstring is committed first):

* Models. B: the shipped model. C: B trained 1,500 more steps with its own (character) encoding. W: B's transformer
  and CLIP encoder trained 1,500 steps with word tokens (a new frozen random Llama of the same size, one token per
  word: "left" and "right" one token each). Both arms: `--seed 1` (batches and noise the shipped model never drew,
  the same for both arms), batch 16, lr 5e-4 with a new 200-step warmup, 40 prompt tokens.
* Evaluation. Each model generates 16 clips per prompt (all seven prompts) from seeds 50,000–50,015, which no
  training drew (pretraining noise comes from generators seeded seed·1,000,003 + step), 20 Euler steps, no guidance.
* Measure. Direction accuracy: for each of the 32 walking clips, whether the judge (the action classifier trained
  from another seed, docs/miniature.md) gives the prompted walk a higher probability than the other walk; chance
  is 0.5. The main action net's direction accuracy is reported as a second opinion, and each prompt's mean judge
  probability (prompt following) shows what else changed.
* Claims, one-sided, Holm over the four: (1) B, (2) C, (3) W tell left from right (accuracy > 0.5, exact binomial);
  (4) W's accuracy exceeds C's on the same seeds (exact McNemar on the clips where they disagree).
* What it can and cannot say. One training run per arm: the intervals cover the clips of that one model, not the
  spread between training runs, so (4) is a single-run observation about this encoding change, not a tested claim
  about word tokens in general. The shipped model is not replaced in this study whatever it shows: every study's
  numbers rest on it, and a new world model would mean rerunning them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from study_stats import holm  # studies/ is on the path when a study runs as a script

SHIPPED = "package://prefopt_plugins/miniature/weights/model"
OUT = Path("runs/left-right")
ARMS = {"character": [], "word": ["--text-tokens", "word"]}
STEPS, SEEDS = 1500, list(range(50_000, 50_016))
WEIGHTS = Path(__file__).resolve().parents[1] / "plugins" / "miniature" / "weights"
NETS = {"judge": WEIGHTS / "judge" / "action", "action net": WEIGHTS / "action"}


def pretrain() -> None:
    """Both arms at once, one thread each (the machine has two cores); resumable: a re-run continues each arm."""
    commands = [[sys.executable, "-m", "prefopt_plugins.miniature.pretrain", "--out", str(OUT / arm), "--minutes",
                 "100000", "--max-steps", str(STEPS), "--seed", "1", "--threads", "1", "--init-from", SHIPPED, *flags]
                for arm, flags in ARMS.items()]
    processes = [subprocess.Popen(command) for command in commands]
    codes = [process.wait() for process in processes]
    if any(codes):
        raise SystemExit(f"pretraining exited with {codes}; a re-run resumes from the arms' checkpoints")


def models() -> dict[str, str]:
    return {"B (shipped)": SHIPPED, **{f"{arm[0].upper()} ({arm}, +{STEPS} steps)": str(OUT / arm) for arm in ARMS}}


def generate(model: str) -> dict[str, np.ndarray]:
    """Action → uint8 clips ``[16, 8, 32, 32, 3]`` generated from its prompt."""
    from prefopt_plugins.miniature.model import miniature_backbone
    from prefopt_plugins.miniature.world import ACTIONS

    backbone = miniature_backbone(model)
    return {action: np.stack([m.frames for m in backbone.generate(
        [prompt] * len(SEEDS), SEEDS, num_frames=8, height=32, width=32, num_inference_steps=20, guidance_scale=1.0)])
        for action, prompt in ACTIONS.items()}


def probabilities(weights: Path, clips: np.ndarray) -> np.ndarray:
    """``[N, 7]`` calibrated action probabilities, as the miniature action reward computes them."""
    import torch

    from prefopt_plugins.miniature.nets import ActionNet, load_net, to_tensor

    net, info = load_net(ActionNet, weights, "action")
    with torch.no_grad():
        logits = torch.cat([net(to_tensor(clip).movedim(0, 1)[None]) for clip in clips])
    return torch.softmax(logits / float(info["temperature"]), -1).numpy()


def correct_direction(probs: dict[str, np.ndarray]) -> np.ndarray:
    """Per walking clip (left prompts, then right): does the prompted walk get more probability than the other?"""
    from prefopt_plugins.miniature.world import ACTIONS

    left, right = list(ACTIONS).index("walk_left"), list(ACTIONS).index("walk_right")
    return np.concatenate([probs["walk_left"][:, left] > probs["walk_left"][:, right],
                           probs["walk_right"][:, right] > probs["walk_right"][:, left]])


def measure(model: str) -> dict:
    from prefopt_plugins.miniature.world import ACTIONS

    clips = generate(model)
    found = {"strip": {a: clips[a][0].tolist() for a in ("walk_left", "walk_right")}}
    for name, weights in NETS.items():
        probs = {action: probabilities(weights, clips[action]) for action in ACTIONS}
        found[name] = {"correct": correct_direction(probs).tolist(),
                       "following": {a: float(probs[a][:, i].mean()) for i, a in enumerate(ACTIONS)}}
    return found


def claims(results: dict[str, dict]) -> list[dict]:
    """The four pre-registered claims on the judge's direction accuracy, with Holm over them."""
    from scipy.stats import binomtest

    correct = {name: np.asarray(found["judge"]["correct"]) for name, found in results.items()}
    rows = []
    for name, hits in correct.items():
        test = binomtest(int(hits.sum()), len(hits), 0.5, alternative="greater")
        low, high = test.proportion_ci(method="wilson")
        rows.append({"claim": f"{name} tells left from right", "estimate": float(hits.mean()),
                     "interval": [float(low), float(high)], "p": float(test.pvalue)})
    (character, c_hits), (word, w_hits) = list(correct.items())[1:]
    only_w, only_c = int((w_hits & ~c_hits).sum()), int((c_hits & ~w_hits).sum())
    mcnemar = binomtest(only_w, only_w + only_c, 0.5, alternative="greater").pvalue if only_w + only_c else 1.0
    rows.append({"claim": f"{word.split(' (')[0]} beats {character.split(' (')[0]} on the same seeds",
                 "estimate": float(w_hits.mean() - c_hits.mean()), "interval": None, "p": float(mcnemar),
                 "discordant": {"only W right": only_w, "only C right": only_c}})
    for row, holds in zip(rows, holm([row["p"] for row in rows])):
        row["holds"] = holds
    return rows


def figure(results: dict[str, dict], path: Path) -> None:
    """Rows: each model's first walk-left clip, then its first walk-right clip (seed 50,000), 8 frames, 4× pixels."""
    from prefopt.media import write_media

    rows = [np.concatenate(list(np.asarray(found["strip"][a], dtype=np.uint8)), axis=1)
            for found in results.values() for a in ("walk_left", "walk_right")]
    strip = np.concatenate(rows, axis=0)
    write_media(path, strip.repeat(4, axis=0).repeat(4, axis=1)[None])


def evaluate() -> None:
    missing = [arm for arm in ARMS if not (OUT / arm / "model_index.json").is_file()]
    if missing:
        raise SystemExit(f"arms not trained yet: {', '.join(missing)}; run `python {__file__} pretrain` first")
    results = {name: measure(model) for name, model in models().items()}
    rows = claims(results)
    (OUT / "results.json").write_text(json.dumps({"results": results, "claims": rows}, indent=1))
    figure(results, Path("docs/images/miniature_left_right.png"))
    print(report(results, rows))


def report(results: dict[str, dict], rows: list[dict]) -> str:
    from prefopt_plugins.miniature.world import ACTIONS

    lines = ["| claim | estimate | 95 % interval | p (one-sided) | holds after Holm |", "|---|---|---|---|---|"]
    for row in rows:
        span = f"[{row['interval'][0]:.2f}, {row['interval'][1]:.2f}]" if row["interval"] else "—"
        lines.append(f"| {row['claim']} | {row['estimate']:+.2f} | {span} | {row['p']:.3g} | "
                     f"{'yes' if row['holds'] else 'no'} |")
    lines += ["", "| model | direction, judge | direction, action net | " + " | ".join(ACTIONS) + " |",
              "|---|---|---|" + "---|" * len(ACTIONS)]
    for name, found in results.items():
        following = " | ".join(f"{found['judge']['following'][a]:.2f}" for a in ACTIONS)
        lines.append(f"| {name} | {np.mean(found['judge']['correct']):.2f} | "
                     f"{np.mean(found['action net']['correct']):.2f} | {following} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("pretrain", "evaluate"))
    {"pretrain": pretrain, "evaluate": evaluate}[parser.parse_args(argv).stage]()


if __name__ == "__main__":
    main()

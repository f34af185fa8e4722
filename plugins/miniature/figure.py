"""A frame strip of the miniature model following each action prompt (for docs/miniature.md).

    python -m prefopt_plugins.miniature.figure plugins/miniature/weights/model docs/images/miniature_actions.png

One row per action: the 8 frames of a clip the model generates from the action's prompt (seeds fixed),
upscaled 4× with nearest-neighbour so a reader sees the pixels the model made.
"""

from __future__ import annotations

import argparse

import numpy as np

from prefopt_plugins.miniature.model import miniature_backbone
from prefopt_plugins.miniature.world import ACTIONS


def action_strips(model: str, seeds=(0, 1), steps: int = 20) -> np.ndarray:
    """``[rows·32, 8·32, 3]``: per action and seed, the generated clip's frames side by side."""
    backbone = miniature_backbone(model)
    rows = []
    for prompt in ACTIONS.values():
        made = backbone.generate([prompt] * len(seeds), list(seeds), num_frames=8, height=32, width=32,
                                 num_inference_steps=steps, guidance_scale=1.0)
        rows += [np.concatenate(list(m.frames), axis=1) for m in made]
    return np.concatenate(rows, axis=0)


def main(argv=None) -> None:
    from prefopt.media import write_media

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    strip = action_strips(args.model)
    write_media(args.out, strip.repeat(4, axis=0).repeat(4, axis=1)[None])
    print(f"{args.out}: rows are, two seeds each: {', '.join(ACTIONS)}")


if __name__ == "__main__":
    main()

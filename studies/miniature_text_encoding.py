"""How far apart the miniature video model's text encoders put the world's seven prompts (issue #25 item 4: does
the model fail to tell walking left from right because its text encoding cannot?).

    python studies/miniature_text_encoding.py

Prints, for each conditioning tensor the HunyuanVideo backbone passes the transformer, the cosine between the two
walking prompts and the spread of the cosines between every other pair of prompts. The encoders are frozen random
networks (docs/miniature.md), so this is a property of the shipped model, measured once, in seconds.

``prompt_embeds`` is compared twice: flattened in token order, and order-free (the mean of the prompt's token
embeddings). The second is closer to what the transformer can use: with a two-layer Llama the pipeline reads the
embedding layer, which has no positions, and HunyuanVideo rotates only video tokens, so the transformer's output
does not change when the prompt's tokens are reordered (`test_the_transformer_reads_the_prompt_as_a_bag_of_tokens`).
"""

from __future__ import annotations

import numpy as np
import torch

MODEL = "package://prefopt_plugins/miniature/weights/model"


def prompt_cosines() -> dict[str, np.ndarray]:
    """Conditioning tensor name → the 7 × 7 cosine matrix of the world's prompts (in ``ACTIONS`` order)."""
    from prefopt.config import parse
    from prefopt.plugins import get_registry
    from prefopt_plugins.miniature.world import ACTIONS

    entry = get_registry().get("backbones", "hunyuan-video")
    options = {"pretrained": MODEL, "dtype": "float32", "device": "cpu", "use_prompt_template": False,
               "max_sequence_length": 40}
    encoded = entry.cls(parse(entry.config_class, options)).encode_prompts(list(ACTIONS.values()))
    found = {name: _cosines(tensor.reshape(len(ACTIONS), -1)) for name, tensor in encoded.items()
             if tensor.is_floating_point()}
    mask = encoded["prompt_attention_mask"].bool()
    found["prompt_embeds, order-free"] = _cosines(
        torch.stack([embeds[kept].mean(0) for embeds, kept in zip(encoded["prompt_embeds"], mask)]))
    return found


def _cosines(rows) -> np.ndarray:
    rows = rows.double().numpy()
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return rows @ rows.T


def main() -> None:
    from prefopt_plugins.miniature.world import ACTIONS

    left, right = list(ACTIONS).index("walk_left"), list(ACTIONS).index("walk_right")
    for name, cosines in prompt_cosines().items():
        others = cosines[~np.eye(len(cosines), dtype=bool)]
        print(f"{name}: walks left/right {cosines[left, right]:.4f}; every pair: min {others.min():.4f}, "
              f"median {np.median(others):.4f}, max {others.max():.4f}")


if __name__ == "__main__":
    main()

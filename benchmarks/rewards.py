"""Seconds to score one 33-frame 256×256 video with each offline reward, on this machine's CPU.

The baseline for the dynamics rewards is a per-pair Python loop calling the flow once per frame pair
on every frame (no fps sampling), i.e. the straightforward way; prefopt's rewards sample at ~8 fps and
batch. Identity uses real dlib weights; CLIP is a tiny random model (its timing shows the pipeline, not
a real CLIP's cost).

    python benchmarks/rewards.py
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import skimage.data

from prefopt.config import parse
from prefopt.media import ReferencePhoto, resize_frames
from prefopt.plugins import get_registry
from prefopt.tiny_models import save_tiny_clip


def reward(name, **options):
    entry = get_registry().get("rewards", name)
    return entry.cls(parse(entry.config_class, options))


def video_of_face() -> tuple[np.ndarray, ReferencePhoto]:
    face = np.ascontiguousarray(skimage.data.astronaut()[20:260, 110:330])
    frame = resize_frames(face[None], 256, 256)[0]
    frames = np.stack([np.roll(frame, shift=2 * i, axis=1) for i in range(33)])
    return frames, ReferencePhoto(face, "astronaut.png")


def timed(fn, repeats=3) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def every_pair_baseline(dynamics, video) -> float:
    return float(np.mean([dynamics.flow_magnitudes(video[i : i + 1], video[i + 1 : i + 2]).mean()
                          for i in range(len(video) - 1)]))


def main() -> None:
    video, ref = video_of_face()
    rows = []
    identity = reward("dlib-id", frames=8)
    rows.append(("dlib-id (8 frames)", timed(lambda: identity.score([video], [""], [ref])), None))
    for method in ("dis", "farneback"):
        dyn = reward("opencv-dynamic", method=method, video_fps=24.0)
        base = timed(lambda dyn=dyn: every_pair_baseline(dyn, video))
        rows.append((f"opencv-dynamic ({method})", timed(lambda dyn=dyn: dyn.score([video], [""], [])), base))
    with tempfile.TemporaryDirectory() as tmp:
        clip = reward("clip-semantic", model=str(save_tiny_clip(f"{tmp}/clip")), device="cpu")
        rows.append(("clip-semantic (tiny CLIP, 8 frames)", timed(lambda: clip.score([video], ["a person"], [])), None))
    print("| reward | s per 33×256×256 video | every-pair baseline s | speed-up |")
    print("|---|---|---|---|")
    for name, seconds, base in rows:
        extra = f"{base:.3f} | {base / seconds:.1f}×" if base else "– | –"
        print(f"| {name} | {seconds:.3f} | {extra} |")


if __name__ == "__main__":
    main()

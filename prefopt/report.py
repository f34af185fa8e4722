"""Pictures shared by recipe reports: training curves, frame strips and thumbnails (PNG, via matplotlib)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from prefopt.files import read_jsonl, write_file
from prefopt.layout import StageFolder
from prefopt.media import read_media, write_media


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (reports run on machines without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | os.PathLike) -> Path:
    """A matplotlib figure as an image (the format from the suffix), whole or not at all: checked by reading it
    back."""
    return write_file(path, lambda tmp: figure.savefig(tmp), lambda tmp: read_media(tmp))


def read_metrics(folder: Path) -> list[dict]:
    """The trainer's metrics log in ``folder`` (torn lines of a killed run skipped)."""
    return read_jsonl(StageFolder(Path(folder)).metrics)


def plot_training(path: Path, runs: dict[str, Path]) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=100)
    for index, (label, folder) in enumerate(runs.items()):
        rows = read_metrics(folder)
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        style = {"label": label, "color": f"C{index}"}  # one colour per run in every panel
        axes[0].plot(steps, [r["loss"] for r in rows], **style)
        if "implicit_accuracy" in rows[0]:
            axes[1].plot(steps, [r["implicit_accuracy"] for r in rows], **style)
            axes[2].plot(steps, [r["reward_margin"] for r in rows], **style)
    for ax, title in zip(axes, ("loss", "implicit accuracy (DPO)", "reward margin (DPO)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def frame_strip(path: Path, video: np.ndarray, frames: int = 6, min_height: int = 96) -> None:
    """Evenly spaced frames side by side; small videos enlarged by whole pixels (nearest) to ``min_height``."""
    indices = np.unique(np.linspace(0, len(video) - 1, frames).round().astype(int))
    strip = np.concatenate([video[i] for i in indices], axis=1)
    factor = -(-min_height // strip.shape[0])
    if factor > 1:
        strip = strip.repeat(factor, axis=0).repeat(factor, axis=1)
    write_media(path, strip[None])


THUMB_SIDE = 96


def thumbnail(out: Path, name: str, video: np.ndarray, frames: int = 1) -> str:
    """A PNG under report/thumbs/ of ``frames`` evenly spaced frames side by side (the first frame when 1),
    each scaled to ``THUMB_SIDE`` on its longer side (small videos by whole pixels, so they stay sharp);
    returns its path relative to the report."""
    from prefopt.media import resize_frames

    indices = np.unique(np.linspace(0, len(video) - 1, frames).round().astype(int))
    picked, (height, width) = video[indices], video.shape[1:3]
    if max(height, width) * 2 <= THUMB_SIDE:
        factor = THUMB_SIDE // max(height, width)
        small = picked.repeat(factor, axis=1).repeat(factor, axis=2)
    else:
        scale = THUMB_SIDE / max(height, width)
        small = resize_frames(picked, max(1, round(height * scale)), max(1, round(width * scale)))
    write_media(out / "thumbs" / f"{name}.png", np.concatenate(list(small), axis=1)[None])
    return f"thumbs/{name}.png"

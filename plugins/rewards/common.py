"""Helpers shared by the reward plugins: frame sampling and reference photos that know their file."""

from __future__ import annotations

import os

import numpy as np


class ReferencePhoto(np.ndarray):
    """A uint8 ``[H, W, 3]`` reference photo that remembers the file it came from (for error messages)."""

    path: str = ""

    def __new__(cls, array: np.ndarray, path: str = ""):
        obj = np.asarray(array).view(cls)
        obj.path = path
        return obj

    def __array_finalize__(self, obj) -> None:
        self.path = getattr(obj, "path", "")


def load_reference_photos(paths: list[str]) -> list[ReferencePhoto]:
    """Read reference photos (first frame of each file) as :class:`ReferencePhoto` arrays."""
    from prefopt.media import read_media

    return [ReferencePhoto(read_media(p)[0], os.fspath(p)) for p in paths]


def describe(reference: np.ndarray, index: int) -> str:
    path = getattr(reference, "path", "")
    return f"`{path}`" if path else f"reference photo #{index}"


def linspace_indices(num_frames: int, count: int) -> np.ndarray:
    """``count`` frame indices spread evenly over the video, first and last included."""
    if count <= 0 or num_frames <= count:
        return np.arange(num_frames)
    return np.unique(np.linspace(0, num_frames - 1, count).round().astype(int))


def fps_indices(num_frames: int, source_fps: float, target_fps: float) -> np.ndarray:
    """Indices that resample a video from ``source_fps`` to about ``target_fps`` (VBench samples ~8 fps)."""
    step = max(1, round(source_fps / target_fps))
    return np.arange(0, num_frames, step)

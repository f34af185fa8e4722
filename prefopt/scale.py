"""Mapping raw reward values onto the 1–10 scale the paper uses for every reward (Sec. 3.3)."""

from __future__ import annotations

import numpy as np

SCALE_MIN = 1.0
SCALE_MAX = 10.0


def to_scale(raw: float | np.ndarray, raw_range: tuple[float, float]) -> float | np.ndarray:
    """Linearly map ``raw`` from ``raw_range`` to [1, 10], clipping values outside the range."""
    low, high = raw_range
    if not high > low:
        raise ValueError(f"raw_range must be increasing, got {raw_range}.")
    fraction = np.clip((np.asarray(raw, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    scaled = SCALE_MIN + (SCALE_MAX - SCALE_MIN) * fraction
    return float(scaled) if np.ndim(scaled) == 0 else scaled


def check_raw_range(config) -> None:
    """A reward config's ``raw_min``/``raw_max`` must be increasing (else every score divides by zero or flips)."""
    if not config.raw_max > config.raw_min:
        raise ValueError(f"`raw_max` ({config.raw_max}) must exceed `raw_min` ({config.raw_min})")

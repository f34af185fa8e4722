"""The miniature world: short videos of drawn avatars, each an identity, moving as the prompt says.

An *identity* is a set of visual attributes (face shape and colour, hair style and colour, eyes, mouth, an
accessory), drawn from the identity's number and the world seed, so identity ``k`` looks the same in every
clip. A *clip* is one identity performing one action over a background; the prompt names the action, never
the identity (as a user's prompts never describe their face). Identities ``[0, num_identities −
held_out)`` are for pretraining; the last ``held_out`` are never seen there, and stills of one of them
play the user's reference photos.

Everything is numpy and deterministic from ``(world seed, identity, action, clip seed)``. Shapes are drawn
at ``SUPERSAMPLE``× the size and box-filtered down, so small features (eyes, a mouth) stay visible at 32 px.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SUPERSAMPLE = 4

FACE_SHAPES = ("round", "wide", "tall", "square")
SKIN = ((255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 205, 148),
        (120, 200, 120), (150, 170, 255))  # the last two: the world is drawn, not photographed
HAIR_STYLES = ("none", "cap", "spiky", "long", "bun")
HAIR_COLOURS = ((20, 20, 20), (110, 60, 20), (230, 200, 90), (200, 60, 30), (160, 160, 170), (60, 90, 220))
EYES = ("dots", "wide", "sleepy", "glasses")
MOUTHS = ("smile", "flat", "open")
ACCESSORIES = ("none", "hat", "earrings", "moustache", "bow")

ACTIONS = {
    "walk_left": "a person walks to the left",
    "walk_right": "a person walks to the right",
    "jump": "a person jumps up and down",
    "nod": "a person nods their head",
    "spin": "a person spins around",
    "zoom": "a person comes closer to the camera",
    "still": "a person stands still",
}


@dataclass(frozen=True)
class Identity:
    """What an avatar looks like; two identities differ in at least one attribute."""

    face: str
    skin: tuple[int, int, int]
    hair: str
    hair_colour: tuple[int, int, int]
    eyes: str
    mouth: str
    accessory: str

    def describe(self) -> str:
        return (f"{self.face} face, {self.hair} hair, {self.eyes} eyes, {self.mouth} mouth, "
                f"{self.accessory if self.accessory != 'none' else 'no'} accessory")


@dataclass(frozen=True)
class World:
    """A world: its seed, how many identities, how many of them are held out, and the clip geometry."""

    seed: int = 0
    num_identities: int = 512
    held_out: int = 64
    frames: int = 8
    size: int = 32

    def __post_init__(self) -> None:
        if not 0 < self.held_out < self.num_identities:
            raise ValueError(f"`held_out` must be in (0, {self.num_identities}), got {self.held_out}")
        if self.num_identities > _ATTRIBUTE_COMBINATIONS:
            raise ValueError(f"at most {_ATTRIBUTE_COMBINATIONS} distinct identities, got {self.num_identities}")

    @property
    def train_identities(self) -> range:
        return range(self.num_identities - self.held_out)

    @property
    def held_out_identities(self) -> range:
        return range(self.num_identities - self.held_out, self.num_identities)

    def identity(self, index: int) -> Identity:
        """Identity ``index``: a distinct attribute combination, shuffled by the world seed."""
        return Identity(*(options[pick] for options, pick in zip(_ATTRIBUTES, self.attribute_codes(index))))

    def attribute_codes(self, index: int) -> tuple[int, ...]:
        """Identity ``index`` as one choice per attribute (face, skin, hair, hair colour, eyes, mouth, accessory)."""
        if not 0 <= index < self.num_identities:
            raise ValueError(f"identity {index} is not in this world (0–{self.num_identities - 1})")
        code, picks = int(_combination_order(self.seed)[index]), []
        for options in _ATTRIBUTES:
            code, pick = divmod(code, len(options))
            picks.append(pick)
        return tuple(picks)

    def clip(self, identity: int, action: str, seed: int) -> np.ndarray:
        """``[frames, size, size, 3]`` uint8: ``identity`` performing ``action`` over a background from ``seed``."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action `{action}`; the world's actions are {', '.join(ACTIONS)}")
        rng = np.random.default_rng([self.seed, identity, list(ACTIONS).index(action), seed])
        background = _background(rng, self.size * SUPERSAMPLE)
        start = rng.uniform(-0.12, 0.12, 2)  # where the avatar stands, as a fraction of the frame
        poses = _poses(action, self.frames, start, rng)
        look = self.identity(identity)
        return np.stack([_downsample(_draw(background.copy(), look, pose)) for pose in poses])

    def still(self, identity: int, seed: int, size: int | None = None) -> np.ndarray:
        """A reference photo: the avatar front-on, centred, over a plain light background, ``[size, size, 3]``."""
        side = (size or self.size) * SUPERSAMPLE
        rng = np.random.default_rng([self.seed, identity, 99, seed])
        shade = rng.uniform(215, 245)
        canvas = np.full((side, side, 3), shade, dtype=np.float32)
        pose = Pose(x=rng.uniform(-0.04, 0.04), y=rng.uniform(-0.04, 0.04), scale=rng.uniform(0.95, 1.05))
        return _downsample(_draw(canvas, self.identity(identity), pose))

    def prompt(self, action: str) -> str:
        return ACTIONS[action]


_ATTRIBUTES = (FACE_SHAPES, SKIN, HAIR_STYLES, HAIR_COLOURS, EYES, MOUTHS, ACCESSORIES)
ATTRIBUTE_SIZES = tuple(len(options) for options in _ATTRIBUTES)
_ATTRIBUTE_COMBINATIONS = int(np.prod([len(a) for a in _ATTRIBUTES]))


@functools.lru_cache(maxsize=8)
def _combination_order(seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 7]).permutation(_ATTRIBUTE_COMBINATIONS)


@dataclass(frozen=True)
class Pose:
    """Where and how the avatar is drawn in one frame (fractions of the frame; 1 = the standard size)."""

    x: float = 0.0
    y: float = 0.0
    scale: float = 1.0
    squash: float = 1.0  # horizontal scale (a spin turns the avatar edge-on)
    tilt: float = 0.0  # vertical offset of the face features (a nod)


def _poses(action: str, frames: int, start: np.ndarray, rng: np.random.Generator) -> list[Pose]:
    t = np.linspace(0.0, 1.0, frames)
    phase = rng.uniform(0, 0.25)
    x0, y0 = float(start[0]), float(start[1])
    if action == "walk_left":
        return [Pose(x=x0 + 0.22 - 0.44 * s, y=y0 + 0.02 * np.sin(6 * np.pi * s)) for s in t]
    if action == "walk_right":
        return [Pose(x=x0 - 0.22 + 0.44 * s, y=y0 + 0.02 * np.sin(6 * np.pi * s)) for s in t]
    if action == "jump":
        return [Pose(x=x0, y=y0 + 0.12 - 0.3 * abs(np.sin(2 * np.pi * (s + phase)))) for s in t]
    if action == "nod":
        return [Pose(x=x0, y=y0, tilt=0.12 * np.sin(4 * np.pi * (s + phase))) for s in t]
    if action == "spin":
        return [Pose(x=x0, y=y0, squash=max(0.15, abs(np.cos(2 * np.pi * (s + phase))))) for s in t]
    if action == "zoom":
        return [Pose(x=x0 * (1 - s), y=y0 * (1 - s), scale=0.7 + 0.65 * s) for s in t]
    return [Pose(x=x0, y=y0) for _ in t]  # still


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """A two-colour gradient with stripes or dots: varied, but never mistaken for a face."""
    top, bottom = rng.uniform(40, 230, 3), rng.uniform(40, 230, 3)
    ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
    canvas = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (side, side, 3)).astype(np.float32).copy()
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    if rng.random() < 0.5:
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.15, 0.35)
        mask = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period) > 0.6
    else:
        period = rng.uniform(0.12, 0.25)
        mask = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2) < (period / 5) ** 2
    canvas[mask] = canvas[mask] * 0.8 + rng.uniform(0, 255, 3) * 0.2
    return canvas


def _draw(canvas: np.ndarray, look: Identity, pose: Pose) -> np.ndarray:
    """Draw the avatar (head, hair, eyes, mouth, accessory) onto a float canvas in place; returns it."""
    side = canvas.shape[0]
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side - 0.5
    radius = 0.22 * pose.scale
    u = (xx - pose.x) / (radius * pose.squash)  # face coordinates: the head spans about [-1, 1]
    v = (yy - pose.y) / radius
    rx, ry = {"round": (1.0, 1.0), "wide": (1.15, 0.85), "tall": (0.85, 1.15), "square": (1.0, 1.0)}[look.face]
    if look.face == "square":
        head = (np.abs(u) ** 4 + np.abs(v) ** 4) <= 1.0
    else:
        head = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
    _hair(canvas, look, u, v, rx, ry, head, back=True)
    canvas[head] = look.skin
    _hair(canvas, look, u, v, rx, ry, head, back=False)
    fv = v - pose.tilt  # features move with a nod
    _eyes(canvas, look, u, fv)
    _mouth(canvas, look, u, fv)
    _accessory(canvas, look, u, v, fv, rx, ry)
    return canvas


def _hair(canvas, look, u, v, rx, ry, head, back: bool) -> None:
    colour = look.hair_colour
    if back and look.hair == "long":
        canvas[(np.abs(u) < rx * 1.2) & (v > -ry * 1.05) & (v < ry * 0.9) & ~head] = colour
    if back and look.hair == "bun":
        canvas[u ** 2 + (v + ry * 1.15) ** 2 < 0.16] = colour
    if not back and look.hair in ("long", "bun", "spiky"):
        canvas[head & (v < -ry * 0.45)] = colour
    if not back and look.hair == "spiky":
        spikes = (v < -ry * 0.8) & (v > -ry * 1.35) & (np.abs(np.sin(u * 9.0)) > (-v - ry * 0.8) / (ry * 0.55))
        canvas[spikes & (np.abs(u) < rx * 0.9)] = colour
    if not back and look.hair == "cap":
        canvas[(v < -ry * 0.35) & (v > -ry * 1.1) & (np.abs(u) < rx * 1.05) & ((u / rx) ** 2 + (v / ry) ** 2 < 1.25)] = colour
        canvas[(v >= -ry * 0.45) & (v < -ry * 0.3) & (u > -rx * 0.2) & (u < rx * 1.45)] = colour  # the peak


def _eyes(canvas, look, u, fv) -> None:
    for side in (-1, 1):
        cu, cv = side * 0.38, -0.12
        if look.eyes == "dots":
            canvas[(u - cu) ** 2 + (fv - cv) ** 2 < 0.012] = (20, 20, 30)
        elif look.eyes == "wide":
            canvas[(u - cu) ** 2 + (fv - cv) ** 2 < 0.035] = (250, 250, 250)
            canvas[(u - cu) ** 2 + (fv - cv) ** 2 < 0.010] = (30, 60, 160)
        elif look.eyes == "sleepy":
            canvas[(np.abs(u - cu) < 0.17) & (np.abs(fv - cv) < 0.04)] = (20, 20, 30)
        else:  # glasses: rims around dot eyes, and a bridge
            ring = (u - cu) ** 2 + (fv - cv) ** 2
            canvas[(ring < 0.05) & (ring > 0.028)] = (10, 10, 10)
            canvas[ring < 0.008] = (20, 20, 30)
    if look.eyes == "glasses":
        canvas[(np.abs(u) < 0.16) & (np.abs(fv + 0.12) < 0.025)] = (10, 10, 10)


def _mouth(canvas, look, u, fv) -> None:
    if look.mouth == "smile":
        canvas[(np.abs(u) < 0.38) & (np.abs(fv - 0.5 + 0.9 * u ** 2) < 0.06)] = (150, 30, 40)  # corners up
    elif look.mouth == "flat":
        canvas[(np.abs(u) < 0.32) & (np.abs(fv - 0.45) < 0.045)] = (120, 40, 40)
    else:
        canvas[(u / 0.2) ** 2 + ((fv - 0.45) / 0.14) ** 2 < 1.0] = (90, 10, 20)


def _accessory(canvas, look, u, v, fv, rx, ry) -> None:
    if look.accessory == "hat":
        canvas[(v < -ry * 0.95) & (v > -ry * 1.55) & (np.abs(u) < rx * 0.7)] = (40, 40, 60)
        canvas[(v < -ry * 0.85) & (v > -ry * 1.0) & (np.abs(u) < rx * 1.25)] = (40, 40, 60)
    elif look.accessory == "earrings":
        for side in (-1, 1):
            canvas[(u - side * rx * 1.02) ** 2 + (v - 0.35) ** 2 < 0.02] = (255, 215, 0)
    elif look.accessory == "moustache":
        canvas[(np.abs(u) < 0.35) & (np.abs(fv - 0.25) < 0.05)] = (60, 40, 20)
    elif look.accessory == "bow":
        for side in (-1, 1):
            canvas[(np.abs(u - side * 0.22) < 0.2) & (np.abs(v - ry * 1.12) < 0.1 + 0.3 * np.abs(u - side * 0.02))
                   & (np.abs(v - ry * 1.12) < 0.16)] = (220, 30, 120)


def _downsample(canvas: np.ndarray) -> np.ndarray:
    side = canvas.shape[0] // SUPERSAMPLE
    box = canvas.reshape(side, SUPERSAMPLE, side, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(box + 0.5, 0, 255).astype(np.uint8)


def save_stills(world: World, identity: int, seeds, folder, size: int = 64) -> list:
    """Write reference photos ``avatar-<identity>-<seed>.png`` (the recipe's `references.photos`)."""
    from pathlib import Path

    from prefopt.media import write_media

    folder = Path(folder)
    paths = []
    for seed in seeds:
        path = folder / f"avatar-{identity}-{seed}.png"
        write_media(path, world.still(identity, seed, size)[None])
        paths.append(path)
    return paths

"""Training examples and the encode-once cache of latents and text embeddings.

Media and prompts are encoded once into safetensors files under the cache directory; the text encoders
and VAE are then unloaded, and training reads only the cached tensors. Latents that came out of
generation (a ``.safetensors`` path) are used directly, with no VAE round trip.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from prefopt import contract
from prefopt.errors import PrefoptError
from prefopt.media import fit_frames, read_media, resize_frames, to_pixels

LATENT_SUFFIX = ".safetensors"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreferenceExample:
    """A preference pair for training: ``winner`` is preferred over ``loser`` for ``prompt``.

    ``winner`` and ``loser`` are media files (mp4, png, …) or latent files (``.safetensors``).
    """

    prompt: str
    winner: str
    loser: str
    weight: float = 1.0


@dataclass(frozen=True)
class SFTExample:
    """A single media file and its prompt, for plain denoising (SFT) training."""

    prompt: str
    media: str


PAIR_COLUMNS = ("prompt", "winner", "loser")


def read_pairs(path: str | os.PathLike) -> list[PreferenceExample]:
    """Pairs from a parquet or JSONL file with columns prompt, winner, loser and optional weight."""
    path = Path(path)
    if not path.is_file():
        raise PrefoptError(f"pairs file `{path}` does not exist.")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    missing = [c for c in PAIR_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise PrefoptError(f"pairs file `{path}` lacks column(s) {', '.join(missing)}; it needs prompt, winner, loser.")
    base = path.parent
    return [
        PreferenceExample(
            prompt=row["prompt"], winner=_resolve(row["winner"], base), loser=_resolve(row["loser"], base),
            weight=float(row.get("weight", 1.0) if row.get("weight") is not None else 1.0),
        )
        for row in rows
    ]


def _resolve(value: str, base: Path) -> str:
    """Relative media paths in a pairs file are relative to the file."""
    return value if os.path.isabs(value) else str((base / value).resolve())


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:24]


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                 durable: bool = True) -> None:
    """A safetensors file, whole or not at all (:func:`prefopt.files.write_file`; checked by reading its header);
    not ``durable``: not flushed to the disk (a cache entry, made again when lost)."""
    from prefopt.files import write_file

    plain = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    write_file(path, lambda tmp: save_file(plain, str(tmp), metadata=metadata),
               lambda tmp: _check_header(tmp, set(plain)), durable=durable)


def _check_header(path: Path, names: set[str]) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        if set(f.keys()) != names:
            raise PrefoptError(f"tensor file `{path}` did not read back with the tensors written.")


def tensors_digest(path: str | os.PathLike) -> str:
    """sha256 of a safetensors file's tensors (names, dtypes, shapes, values) and metadata, not of its bytes:
    safetensors writes its metadata map in a different order in every process, so one LoRA saved twice gives two
    different files, and results keyed by file bytes would be made again for identical weights."""
    from safetensors import safe_open

    digest = hashlib.sha256()
    try:
        with safe_open(str(path), framework="pt") as f:
            digest.update(json.dumps(f.metadata() or {}, sort_keys=True).encode())
            for name in sorted(f.keys()):
                tensor = f.get_tensor(name).contiguous()
                digest.update(f"{name}\x1f{tensor.dtype}\x1f{tuple(tensor.shape)}\x1f".encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    except (OSError, SafetensorError) as e:
        raise PrefoptError(f"tensor file `{path}` cannot be read ({e}); it is missing, truncated or corrupt.") from e
    return digest.hexdigest()


def load_tensors(path: str | os.PathLike, what: str = "tensor file") -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing, truncated or corrupt file is one sentence naming it."""
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise PrefoptError(f"{what} `{path}` cannot be read ({e}); it is missing, truncated or corrupt.") from e


def verify_safetensors(path: str | os.PathLike, what: str) -> None:
    """Raise a one-sentence error unless ``path`` reads back whole with at least one tensor, all finite."""
    tensors = load_tensors(path, what)
    if not tensors:
        raise PrefoptError(f"{what} `{path}` holds no tensors.")
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise PrefoptError(f"{what} `{path}` holds non-finite values (in `{bad[0]}`).")


class EncodedCache:
    """Encodes each distinct media file and prompt once; files are keyed by content identity."""

    def __init__(self, directory: str | os.PathLike, backbone, *, num_frames: int, height: int, width: int):
        self.directory = Path(directory)
        self.backbone = backbone
        self.size = (num_frames, height, width)
        self._warned_sizes: set[tuple[int, int]] = set()
        self.model_key = _digest(backbone.cache_key(), *self.size)

    def text_path(self, prompt: str) -> Path:
        return self.directory / "text" / f"{_digest(self.model_key, prompt)}{LATENT_SUFFIX}"

    def latent_path(self, media: str) -> Path:
        if media.endswith(LATENT_SUFFIX):
            return Path(media)
        stat = os.stat(media)
        return self.directory / "latents" / f"{_digest(self.model_key, os.path.abspath(media), stat.st_size, stat.st_mtime_ns)}{LATENT_SUFFIX}"

    def encode(
        self, prompts: Sequence[str], media: Sequence[str], on_progress: Callable[[], None] | None = None,
    ) -> None:
        """Encode whatever is not cached yet (prompts in one batch, media one file at a time)."""
        todo_prompts = sorted({p for p in prompts if not self.text_path(p).is_file()})
        if todo_prompts:
            encoded = contract.encode_prompts(self.backbone, todo_prompts)
            for i, prompt in enumerate(todo_prompts):
                save_tensors(self.text_path(prompt), {k: v[i : i + 1] for k, v in encoded.items()}, durable=False)
        for item in dict.fromkeys(media):
            target = self.latent_path(item)
            if not target.is_file():
                if item.endswith(LATENT_SUFFIX):
                    raise PrefoptError(f"latent file `{item}` does not exist.")
                save_tensors(target, {"latents": contract.encode_media(self.backbone, self._pixels(item))[0:1]}, durable=False)
            if on_progress:
                on_progress()

    def _pixels(self, media: str) -> torch.Tensor:
        num_frames, height, width = self.size
        frames = read_media(media)
        self._warn_on_resize(media, frames.shape[1:3])
        frames = fit_frames(resize_frames(frames, height, width), num_frames)
        return to_pixels(frames)[None]

    def _warn_on_resize(self, media: str, size: tuple[int, int]) -> None:
        """One warning per distinct source size: training on resized media is a choice the user should see."""
        target = self.size[1:]
        if tuple(size) != tuple(target) and tuple(size) not in self._warned_sizes:
            self._warned_sizes.add(tuple(size))
            logger.warning("media of size %d×%d (e.g. `%s`) are resized to %d×%d for training; set the trainer's "
                           "`height`/`width` to train at another size.", size[0], size[1], media, *target)

    def load_text(self, prompt: str) -> dict[str, torch.Tensor]:
        return load_tensors(self.text_path(prompt), "cached text embedding (delete it to re-encode)")

    def load_latents(self, media: str) -> torch.Tensor:
        tensors = load_tensors(self.latent_path(media), f"latents of `{media}`")
        latents = tensors["latents"]
        return latents if latents.ndim == 5 else latents[None]

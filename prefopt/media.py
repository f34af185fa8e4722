"""Reading, writing and resizing media. A video is uint8 ``[F, H, W, 3]``; an image is a 1-frame video."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from prefopt.errors import PrefoptError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".gif", ".webm", ".mov", ".avi", ".mkv"}


def read_media(path: str | os.PathLike) -> np.ndarray:
    """Frames of an image or video file as uint8 ``[F, H, W, 3]``."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise PrefoptError(f"media file `{path}` does not exist.")
    suffix = path.suffix.lower()
    try:
        if suffix in IMAGE_SUFFIXES:
            frames = iio.imread(path)[None]
        elif suffix == ".npy":
            frames = np.load(path)
        else:
            frames = iio.imread(path, index=None)
    except (OSError, ValueError) as e:
        raise PrefoptError(f"media file `{path}` could not be read: {e}") from e
    return _as_rgb_video(frames, path)


def _as_rgb_video(frames: np.ndarray, path: Path) -> np.ndarray:
    if frames.ndim == 3:  # [F, H, W] grayscale video, or a single [H, W, C] image
        frames = frames[..., None] if frames.shape[-1] not in (3, 4) else frames[None]
    if frames.ndim != 4:
        raise PrefoptError(f"media file `{path}` has shape {frames.shape}; expected frames × height × width × channels.")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frames[..., :3])


def write_media(path: str | os.PathLike, frames: np.ndarray, fps: int = 8) -> Path:
    """Write uint8 ``[F, H, W, 3]`` frames as mp4/gif (or png for one frame), atomically."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        iio.imwrite(tmp, frames[0])
    elif path.suffix.lower() == ".npy":
        with open(tmp, "wb") as f:
            np.save(f, frames)
    elif path.suffix.lower() == ".gif":
        iio.imwrite(tmp, frames, duration=1000 / fps, loop=0)
    else:
        # Even sizes for yuv420p; lossless enough (crf 12) that rewards see what the model made.
        iio.imwrite(tmp, _even(frames), fps=fps, codec="libx264", output_params=["-crf", "12"],
                    macro_block_size=1)
    os.replace(tmp, path)
    return path


def _even(frames: np.ndarray) -> np.ndarray:
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    return frames[:, :h, :w]


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize so the frame covers ``height × width``, then centre-crop (aspect ratio kept, nothing padded)."""
    import torch.nn.functional as F

    _, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    tensor = F.interpolate(tensor, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    tensor = tensor[:, :, top : top + height, left : left + width]
    return tensor.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def fit_frames(frames: np.ndarray, num_frames: int) -> np.ndarray:
    """Exactly ``num_frames`` frames: the first ones, or the sequence repeated when it is shorter."""
    if len(frames) >= num_frames:
        return frames[:num_frames]
    reps = -(-num_frames // len(frames))
    return np.concatenate([frames] * reps)[:num_frames]


def to_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[F, H, W, 3]`` → float ``[3, F, H, W]`` in [-1, 1], the layout video VAEs take."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def inflate_image(image: np.ndarray, num_frames: int, height: int, width: int) -> np.ndarray:
    """A static video: ``image`` (uint8 ``[H, W, 3]``) resized/cropped as in :func:`resize_frames`, repeated."""
    frame = resize_frames(image[None], height, width)
    return np.repeat(frame, num_frames, axis=0)

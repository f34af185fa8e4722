"""Reading, writing, resizing and sampling media; reference photos. A video is uint8 ``[F, H, W, 3]``; an image is a
1-frame video."""

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
        return _as_rgb_video(np.asarray(frames), path)
    except (PrefoptError, MemoryError):
        raise
    except Exception as e:  # decoders fail on damaged files with any error type (SyntaxError, IndexError, …)
        said = (str(e).strip().splitlines() or [""])[0].rstrip(".")  # decoders' messages run over several lines
        raise PrefoptError(f"media file `{path}` could not be read ({type(e).__name__}: {said}); it is damaged or "
                           "not a picture or video.") from e


def _as_rgb_video(frames: np.ndarray, path: Path) -> np.ndarray:
    if frames.ndim == 3:  # [F, H, W] grayscale video, or a single [H, W, C] image
        frames = frames[..., None] if frames.shape[-1] not in (3, 4) else frames[None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 2, 3, 4) or 0 in frames.shape:
        raise PrefoptError(f"media file `{path}` has shape {frames.shape}; expected frames × height × width × channels "
                           "(1 to 4 channels).")
    if frames.shape[-1] <= 2:  # grey, or grey and alpha
        frames = np.repeat(frames[..., :1], 3, axis=-1)
    if frames.dtype == np.bool_:  # 1-bit images
        frames = frames.astype(np.uint8) * 255
    elif frames.dtype == np.uint16:  # 16-bit PNGs
        frames = (frames >> 8).astype(np.uint8)
    elif frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frames[..., :3])


def write_media(path: str | os.PathLike, frames: np.ndarray, fps: int = 8) -> Path:
    """Write uint8 ``[F, H, W, 3]`` frames as mp4/gif (or png for one frame) whole or not at all: under a temporary
    name, read back and checked (frame count and size), then renamed. A full disk is an ``ENOSPC`` error, also when
    ffmpeg (which reports it only in words) was the writer."""
    from prefopt.files import write_file

    path = Path(path)
    suffix = path.suffix.lower()
    # What reading the file back must give: (frames, height, width). Pillow merges repeated GIF frames, so a GIF's
    # frame count is not checked; mp4 frames are cropped to even sizes.
    count = 1 if suffix in IMAGE_SUFFIXES else None if suffix == ".gif" else len(frames)
    size = _even(frames).shape[1:3] if suffix not in IMAGE_SUFFIXES | {".npy", ".gif"} else frames.shape[1:3]
    expected = (count or "any", *size)

    def check(tmp: Path) -> None:
        try:
            written = read_media(tmp)
        except PrefoptError as e:
            raise _write_failure(path, str(e)) from e
        if written.shape[1:3] != tuple(size) or count not in (None, len(written)):
            raise _write_failure(path, f"it reads back as {written.shape[:3]} (frames, height, width), not {expected}")

    return write_file(path, lambda tmp: _write_frames(tmp, frames, fps), check)


def _write_frames(tmp: Path, frames: np.ndarray, fps: int) -> None:
    import imageio.v3 as iio

    suffix = tmp.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        from PIL import Image

        # Pillow directly: imageio's plugin raises a full disk's error again, unnamed, when it is collected.
        Image.fromarray(np.ascontiguousarray(frames[0])).save(tmp)
    elif suffix == ".npy":
        with open(tmp, "wb") as f:
            np.save(f, frames)
    elif suffix == ".gif":
        iio.imwrite(tmp, frames, duration=1000 / fps, loop=0)
    else:
        _ffmpeg_h264(tmp, _even(frames), fps)


def _ffmpeg_h264(path: Path, frames: np.ndarray, fps: int) -> None:
    """H.264 through imageio-ffmpeg's ffmpeg with imageio's own settings (so the pixels are the same), but with its
    exit status and error text read: imageio returns quietly when ffmpeg could not write (a full disk)."""
    import subprocess

    import imageio_ffmpeg

    _, height, width, _ = frames.shape
    # yuv420p for players; crf 12 is lossless enough that rewards see what the model made.
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}",
               "-pix_fmt", "rgb24", "-r", str(fps), "-i", "-", "-an", "-vcodec", "libx264", "-pix_fmt", "yuv420p",
               "-v", "error", "-crf", "12", str(path)]
    # Its own session: a ctrl-C in the terminal reaches prefopt, which stops cleanly, not ffmpeg mid-write.
    done = subprocess.run(command, input=np.ascontiguousarray(frames).tobytes(), capture_output=True,
                          start_new_session=True, check=False)
    if done.returncode != 0:
        said = " / ".join(done.stderr.decode(errors="replace").strip().splitlines()[-4:])
        raise _write_failure(path, f"ffmpeg: {said}" if said else f"ffmpeg exited with status {done.returncode}")


def _write_failure(path: Path, detail: str) -> PrefoptError:
    """A media file that did not write or read back; :func:`prefopt.files.full_disk_named` turns it into a full
    disk's error when the disk is the cause."""
    return PrefoptError(f"writing media file `{path}` failed: {detail}.")


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


# --- frames and reference photos, as rewards and metrics read them ------------------------------------


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

"""Reading and writing media: every image mode a user brings, videos that read back as written, sizes fitted."""

import numpy as np
import pytest
from PIL import Image

from prefopt.errors import PrefoptError
from prefopt.media import fit_frames, fps_indices, linspace_indices, read_media, resize_frames, write_media


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "CMYK"])
def test_every_common_image_mode_reads_as_rgb_uint8(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    path = tmp_path / ("image.jpg" if mode == "CMYK" else "image.png")
    rgb.convert(mode).save(path)
    frames = read_media(path)
    assert frames.shape == (1, 16, 16, 3) and frames.dtype == np.uint8
    if mode == "1":
        assert set(np.unique(frames)) <= {0, 255}  # black and white, not 0 and 1


def test_a_video_reads_back_with_its_frame_count_and_size(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (9, 33, 47, 3), dtype=np.uint8)
    written = read_media(write_media(tmp_path / "v.mp4", frames))
    assert written.shape == (9, 32, 46, 3)  # cropped to even sizes for yuv420p
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_an_unreadable_file_is_one_sentence_whatever_its_decoder_raised(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(PrefoptError, match=r"media file `.*x.png` could not be read \(\w+: [^\n]*\); it is damaged"):
        read_media(tmp_path / "x.png")


def test_resizing_covers_then_crops_and_frames_are_fitted():
    frames = np.zeros((3, 20, 40, 3), np.uint8)
    assert resize_frames(frames, 10, 10).shape == (3, 10, 10, 3)
    assert fit_frames(frames, 7).shape[0] == 7 and fit_frames(frames, 2).shape[0] == 2
    assert list(linspace_indices(9, 3)) == [0, 4, 8] and list(fps_indices(8, 24, 8)) == [0, 3, 6]

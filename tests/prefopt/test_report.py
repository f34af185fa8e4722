"""Report pictures: figures written whole, metrics read whatever a kill left, thumbnails that stay sharp."""

import numpy as np

from prefopt.media import read_media
from prefopt.report import pyplot, read_metrics, save_figure, thumbnail


def test_a_figure_is_written_whole_and_reads_back(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "curve.png")
    assert read_media(path).shape[0] == 1 and [p.name for p in tmp_path.iterdir()] == ["curve.png"]


def test_training_curves_read_a_metrics_log_with_a_torn_last_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 0.7}\n{"step": 2, "loss": 0.6}\n{"st')
    assert [row["step"] for row in read_metrics(tmp_path)] == [1, 2]
    assert read_metrics(tmp_path / "nothing-here") == []


def test_small_videos_are_enlarged_by_whole_pixels_in_thumbnails(tmp_path):
    video = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    relative = thumbnail(tmp_path, "x", video, frames=2)
    picture = read_media(tmp_path / relative)[0]
    assert picture.shape == (96, 192, 3)  # 16 px × 6, two frames side by side
    assert (picture[:6, :6] == video[0, 0, 0]).all()  # one source pixel is a 6 × 6 block

"""The one scoring loop: every named reward over media in batches, stored per reward configuration, resumable."""

from dataclasses import dataclass, field

import numpy as np
import pytest

from prefopt.config import RewardSpec
from prefopt.errors import PrefoptError
from prefopt.interfaces import RewardScore
from prefopt.media import write_media
from prefopt.repository import MediaRecord, MediaRepository
from prefopt_recipes.common.scoring import score_in_memory, score_items, verify_scored


@dataclass
class BrightnessConfig:
    scale: float = field(default=1.0, metadata={"help": "Multiplies the mean pixel value."})


class Brightness:
    """Mean pixel value (a test reward); counts the videos it has seen."""

    name = "brightness"
    Config = BrightnessConfig
    raw_range = (0.0, 255.0)
    seen = 0

    def __init__(self, config):
        self.config = config

    def score(self, videos, prompts, references):
        Brightness.seen += len(videos)
        return [RewardScore(value=1 + 9 * float(np.mean(v)) / 255, raw=float(np.mean(v)) * self.config.scale)
                for v in videos]

    def provenance(self):
        return {"model": "mean pixel"}


@pytest.fixture
def brightness(plugin, make_plugin_module):
    plugin(make_plugin_module("register_rewards", Brightness), name="brightness-plugin")
    Brightness.seen = 0
    return {"light": RewardSpec(name="brightness", options=BrightnessConfig())}


def _repository(tmp_path, count):
    repository = MediaRepository(tmp_path)
    records = []
    for i in range(count):
        write_media(repository.media_dir / f"v{i}.mp4", np.full((2, 16, 16, 3), 20 * i, np.uint8))
        records.append(MediaRecord(id=f"v{i}", source="base", prompt="p", media_path=f"media/v{i}.mp4"))
    repository.add(records)
    return repository, records


def test_items_are_scored_once_per_reward_configuration(tmp_path, brightness):
    repository, records = _repository(tmp_path, 5)
    assert score_items(repository, brightness, records[:3]) == {"light": 3}
    with pytest.raises(PrefoptError, match="2 of 5 items have no `light` score"):
        verify_scored(repository, brightness, records, "the scoring stage")
    assert score_items(repository, brightness, records) == {"light": 2} and Brightness.seen == 5  # resumed
    verify_scored(repository, brightness, records, "the scoring stage")
    changed = {"light": RewardSpec(name="brightness", options=BrightnessConfig(scale=2.0))}
    assert score_items(repository, changed, records) == {"light": 5}  # other options: scored anew


def test_samples_in_memory_get_every_rewards_scores_in_order(brightness):
    samples = [("p", np.full((2, 8, 8, 3), value, np.uint8)) for value in (0, 255, 51)]
    from prefopt_recipes.common.scoring import load_rewards

    scores = score_in_memory(load_rewards(brightness), samples)
    assert [s.raw for s in scores["light"]] == [0.0, 255.0, 51.0]

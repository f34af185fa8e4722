"""Dynamics rewards: a static video scores lower than the same image translating, with every backend."""

import numpy as np
import pytest
import torch

from prefopt.errors import MissingWeightsError
from prefopt_plugins.rewards.dynamics import top_fraction_mean, vbench_is_dynamic


def _textured(size=160, seed=0):
    import skimage.data

    image = skimage.data.astronaut()
    return np.ascontiguousarray(image[100 : 100 + size, 150 : 150 + size])


def _translating(image, frames, step):
    return np.stack([np.roll(image, shift=i * step, axis=1) for i in range(frames)])


@pytest.fixture(scope="module")
def raft_weights(tmp_path_factory):
    """A random-weight RAFT saved as a state dict, loaded back through the reward's weights option."""
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("raft") / "raft_small_random.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    return str(path)


BACKENDS = [("opencv-dynamic", {"method": "dis"}), ("opencv-dynamic", {"method": "farneback"})]


@pytest.mark.parametrize("name, options", BACKENDS)
def test_static_scores_below_translation(make_reward, name, options):
    reward = make_reward(name, video_fps=8.0, **options)
    image = _textured()
    static = np.repeat(image[None], 9, axis=0)
    moving = _translating(image, 9, 3)
    low, high = reward.score([static, moving], ["", ""], [])
    assert low.raw < 0.5 and high.raw > 2.0 and low.value < high.value
    assert low.metadata["pairs"] == high.metadata["pairs"] == 8
    assert reward.provenance()["model"].startswith("opencv")


def test_raft_loads_a_weights_file_and_orders_static_below_translation(make_reward, raft_weights):
    reward = make_reward("raft-dynamic", model="raft_small", weights=raft_weights, device="cpu", iterations=4, video_fps=8.0)
    image = _textured(96)
    static = np.repeat(image[None], 3, axis=0)
    # Random weights give no meaningful flow field, but identical frames still give (near) zero flow
    # relative to frames that differ, which is all the ordering needs.
    moving = _translating(image, 3, 4)
    low, high = reward.score([static, moving], ["", ""], [])
    assert low.raw < high.raw
    assert reward.provenance()["weights"] == raft_weights


def test_raft_missing_weights_is_one_clear_sentence(make_reward, tmp_path):
    with pytest.raises(MissingWeightsError, match=r"RAFT weights file `.*nope.pth` does not exist"):
        make_reward("raft-dynamic", weights=str(tmp_path / "nope.pth"))


def test_raft_defaults_to_vbenchs_weights_and_iterations(monkeypatch, tmp_path):
    """VBench's Dynamic Degree uses the original RAFT's `raft-things` (torchvision's C_T_V1) with 20 iterations."""
    import torch

    from prefopt.errors import ConfigError
    from prefopt_plugins.rewards.dynamics import RaftDynamicsConfig, RaftDynamicsReward

    config = RaftDynamicsConfig()
    assert (config.model, config.torchvision_weights, config.iterations) == ("raft_large", "C_T_V1", 20)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert "raft_large_C_T_V1-22a6c225.pth" in RaftDynamicsReward.missing_weights(config)
    with pytest.raises(ConfigError, match="`torchvision_weights` of raft_small must be one of C_T_V1, C_T_V2"):
        RaftDynamicsReward.missing_weights(RaftDynamicsConfig(model="raft_small", torchvision_weights="things"))


def test_vbench_rules():
    assert top_fraction_mean(np.arange(100.0)) == pytest.approx(97.0)  # top 5: 95..99
    # 16 sampled frames at 256 px: moving when at least 4 pairs exceed 6.
    assert vbench_is_dynamic([7, 7, 7, 7, 1], 256, 256, 16) and not vbench_is_dynamic([7, 7, 7, 1], 256, 256, 16)
    assert not vbench_is_dynamic([7, 7, 7, 7], 512, 512, 16)  # threshold scales to 12 at 512 px

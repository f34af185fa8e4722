"""Training the miniature reward nets: a few steps run, write what they trained from, and save nets that load."""

import pytest
import torch

from prefopt.errors import MissingWeightsError
from prefopt_plugins.miniature.nets import ActionNet, load_net, missing_net, save_net
from prefopt_plugins.miniature.train_rewards import arcface_logits, train_action
from prefopt_plugins.miniature.world import World


@pytest.mark.slow
def test_a_short_action_training_records_itself_and_saves_a_net_that_loads(tmp_path):
    net, temperature, record = train_action(World(seed=0), minutes=1.0, seed=0, max_steps=2)
    assert record["steps"] == 2 and temperature > 0 and 0.0 <= record["accuracy"] <= 1.0
    save_net(net, tmp_path / "action", {**record, "temperature": temperature})
    loaded, info = load_net(ActionNet, tmp_path / "action", "action")
    assert info["steps"] == 2 and all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                                         loaded.state_dict().values()))
    assert "miniature action model" in missing_net(tmp_path / "none", "action")
    with pytest.raises(MissingWeightsError):
        load_net(ActionNet, tmp_path / "none", "action")


def test_the_arcface_margin_lowers_the_true_class_logit_only():
    embeddings = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    weight = torch.randn(3, 8)
    labels = torch.tensor([0, 1, 2, 0])
    plain = arcface_logits(embeddings, weight, labels, margin=0.0)
    margin = arcface_logits(embeddings, weight, labels, margin=0.3)
    true = torch.nn.functional.one_hot(labels, 3).bool()
    assert torch.allclose(plain[~true], margin[~true]) and (margin[true] < plain[true]).all()

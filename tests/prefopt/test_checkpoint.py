"""Checkpoints hold no code and survive damage: a crafted pickle is refused, a torn checkpoint is skipped
for the previous intact one, and resume from that one continues exactly."""

import logging
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file

from prefopt.checkpoint import newest_readable_checkpoint, read_checkpoint, save_checkpoint
from prefopt.errors import PrefoptError
from prefopt.trainer import DiffusionDPOTrainer
from tests.prefopt.test_trainer import _config, _pairs, _videos


class _RunsCode:
    """A pickle that runs a command when loaded (what a third party could plant in a run directory)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _checkpoint(root, step=1):
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    weight.grad = torch.ones(2)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return save_checkpoint(root, step, {"dpo": {"w": weight.detach()}}, optimizer, scheduler, {})


def test_checkpoint_round_trip_restores_every_generator(tmp_path):
    import random

    import numpy as np

    from prefopt.checkpoint import apply_checkpoint

    path = _checkpoint(tmp_path)  # generator states saved here: the next draws must repeat after restoring
    assert not (path / "rng.pt").exists() and (path / "rng.json").is_file()  # safetensors + JSON, no pickle
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(1)  # move every generator on
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    apply_checkpoint(read_checkpoint(path), optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert optimizer.state_dict()["state"][0]["step"] == 1  # the saved optimizer's moments came back


@pytest.mark.parametrize("planted", ["optimizer.pt", "scheduler.pt"])
def test_a_crafted_pickle_is_refused_and_runs_nothing(tmp_path, planted):
    path = _checkpoint(tmp_path)
    marker = tmp_path / "code-ran"
    (path / planted).write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(PrefoptError, match=rf"`{path / planted}` cannot be read safely"):
        read_checkpoint(path)
    assert not marker.exists()


def test_a_planted_legacy_rng_pickle_is_never_read(tmp_path):
    path = _checkpoint(tmp_path)
    marker = tmp_path / "code-ran"
    (path / "rng.pt").write_bytes(pickle.dumps(_RunsCode(marker)))
    assert newest_readable_checkpoint(tmp_path).path == path
    assert not marker.exists()


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    older, newer = _checkpoint(tmp_path, 1), _checkpoint(tmp_path, 2)
    lora = newer / "lora-dpo.safetensors"
    lora.write_bytes(lora.read_bytes()[:20])
    with caplog.at_level(logging.WARNING, logger="prefopt"):
        assert newest_readable_checkpoint(tmp_path).path == older
    assert str(lora) in caplog.text and "Falling back" in caplog.text


@pytest.mark.slow
def test_resume_after_a_torn_checkpoint_continues_exactly_from_the_previous_one(tmp_path, make_backbone):
    examples = _pairs(_videos(tmp_path, 6))
    straight = DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(max_steps=6), tmp_path / "a")
    expected = load_file(str(straight.train(examples)))
    run = tmp_path / "b"
    DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(max_steps=4, checkpoint_every=2, keep_checkpoints=3),
                        run).train(examples)
    (run / "checkpoints" / "step-000004" / "optimizer.pt").write_bytes(b"torn")
    resumed = DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(max_steps=6, checkpoint_every=2), run)
    got = load_file(str(resumed.train(examples)))
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0)
    # The torn one was set aside, not counted among the kept checkpoints, and replaced by a good step 4.
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "step-000004.broken" in names and {"step-000004", "step-000006"} <= set(names)

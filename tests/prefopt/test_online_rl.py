"""OnlineRLTrainer on tiny random pipelines: the first update is on-policy (ratio 1, KL 0), each algorithm moves the
LoRA, a resumed run continues exactly, two runs of one config are identical, and two processes train the LoRA one
process trains."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from prefopt.errors import PrefoptError
from prefopt.interfaces import RewardScore
from prefopt.online_rl import OnlineRLConfig, OnlineRLTrainer, evaluation_seed, training_seed

PROMPTS = ["a cat runs", "a dog sits", "a bird flies"]


class Brightness:
    """Mean brightness on 1–10: a reward cheap enough for tests that depends on every pixel."""

    name = "brightness"
    raw_range = (0.0, 255.0)

    def score(self, videos, prompts, references):
        return [RewardScore(value=1 + 9 * float(v.mean()) / 255, raw=float(v.mean())) for v in videos]

    def provenance(self):
        return {"name": self.name}


def _config(**overrides) -> OnlineRLConfig:
    options = {"epochs": 2, "prompts_per_epoch": 2, "group_size": 3, "sampling_steps": 4, "learning_rate": 1e-2,
               "lora_rank": 4, "lora_alpha": 4, "micro_batch_size": 3, "num_frames": 5, "height": 32, "width": 32}
    return OnlineRLConfig(**{**options, **overrides})


def _train(backbone, tmp_path, name="run", **overrides) -> tuple[Path, list[dict]]:
    trainer = OnlineRLTrainer(backbone, _config(**overrides), {"brightness": Brightness()}, tmp_path / name)
    lora = trainer.train(PROMPTS)
    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return lora, rows


def _lora(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_training_seeds_never_meet_evaluation_seeds():
    train = {training_seed(0, e, g, j) for e in range(20) for g in range(8) for j in range(8)}
    evaluation = {evaluation_seed(0, p, j) for p in range(50) for j in range(8)}
    assert len(train) == 20 * 8 * 8 and not train & evaluation
    assert training_seed(1, 0, 0, 0) != training_seed(0, 0, 0, 0)


def test_grpo_starts_on_policy_with_no_kl_and_moves_the_lora(tmp_path, make_backbone):
    lora, rows = _train(make_backbone("hunyuan-video"), tmp_path, kl_beta=0.1)
    first, second = rows
    assert first["ratio_first_update"] == pytest.approx(1.0, abs=1e-5)  # rollouts and update see the same policy
    assert first["kl"] == 0.0  # the zero-initialised LoRA is the reference
    assert second["kl"] > 0
    assert [r["epoch"] for r in rows] == [1, 2]
    assert any(v.abs().sum() > 0 for k, v in _lora(lora).items() if "lora_B" in k)
    record = json.loads((tmp_path / "run" / "rollouts" / "epoch-0001.json").read_text())
    assert len(record["samples"]) == 6 and (tmp_path / "run" / "rollouts" / "epoch-0002.png").is_file()
    advantages = [s["advantage"] for s in record["samples"]]
    assert sum(advantages) == pytest.approx(0, abs=1e-6)  # centred within each group


@pytest.mark.parametrize("algorithm", ["nft", "awm"])
def test_forward_process_algorithms_move_the_lora(tmp_path, make_backbone, algorithm):
    lora, rows = _train(make_backbone("hunyuan-video"), tmp_path, algorithm=algorithm, epochs=1)
    assert np.isfinite(rows[0]["policy_loss"])
    assert any(v.abs().sum() > 0 for k, v in _lora(lora).items() if "lora_B" in k)
    if algorithm == "awm":
        assert rows[0]["ratio_first_update"] == pytest.approx(1.0, abs=1e-5)


def test_a_sde_window_trains_only_its_steps(tmp_path, make_backbone):
    _, rows = _train(make_backbone("hunyuan-video"), tmp_path, sde_window=1, epochs=1)
    assert rows[0]["ratio_first_update"] == pytest.approx(1.0, abs=1e-5)


def test_noise_predicting_backbones_train_with_nft_and_refuse_grpo(tmp_path, make_backbone):
    backbone = make_backbone("stable-diffusion")
    with pytest.raises(PrefoptError, match="needs a flow-matching backbone.*use `algorithm: nft`"):
        OnlineRLTrainer(backbone, _config(num_frames=1), {"brightness": Brightness()}, tmp_path / "grpo")
    lora, _ = _train(backbone, tmp_path, algorithm="nft", epochs=1, num_frames=1)
    assert any(v.abs().sum() > 0 for k, v in _lora(lora).items() if "lora_B" in k)


def test_options_of_another_algorithm_are_refused():
    with pytest.raises(ValueError, match="`sde_window` takes effect only with `algorithm: grpo`"):
        OnlineRLConfig(algorithm="nft", sde_window=2)
    with pytest.raises(ValueError, match="`clip_range` takes effect only with"):
        OnlineRLConfig(algorithm="nft", clip_range=0.1)
    assert OnlineRLConfig().kl_beta == 0.04 and OnlineRLConfig(algorithm="awm").clip_range == 1e-5


@pytest.mark.slow
def test_a_resumed_run_continues_exactly_and_two_runs_are_identical(tmp_path, make_backbone, monkeypatch):
    uninterrupted, rows = _train(make_backbone("hunyuan-video"), tmp_path, "a")
    again, _ = _train(make_backbone("hunyuan-video"), tmp_path, "b")
    calls = []
    original = OnlineRLTrainer._epoch

    def crash_in_the_second_epoch(self, *args):
        calls.append(self.step)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(OnlineRLTrainer, "_epoch", crash_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        _train(make_backbone("hunyuan-video"), tmp_path, "c")
    monkeypatch.setattr(OnlineRLTrainer, "_epoch", original)
    resumed, resumed_rows = _train(make_backbone("hunyuan-video"), tmp_path, "c")
    expected = _lora(uninterrupted)
    for other in (again, resumed):  # tensors, not bytes: safetensors orders header metadata at random
        trained = _lora(other)
        assert trained.keys() == expected.keys()
        assert all(torch.equal(trained[k], expected[k]) for k in expected)
    timing = ("rollout_s", "update_s", "elapsed_s", "cpu_s")
    strip = [{k: v for k, v in r.items() if k not in timing} for r in resumed_rows]
    assert strip == [{k: v for k, v in r.items() if k not in timing} for r in rows]


def _train_on_ranks(model_dir: str, work: str) -> None:
    # Runs in each rank launched by torchrun (gloo process group on CPU), and once alone for comparison.
    from accelerate import Accelerator

    from prefopt.config import parse
    from prefopt.plugins import get_registry

    accelerator = Accelerator(cpu=True)
    entry = get_registry().get("backbones", "hunyuan-video")
    options = {"pretrained": model_dir, "dtype": "float32", "device": "cpu", "use_prompt_template": False,
               "max_sequence_length": 16}
    backbone = entry.cls(parse(entry.config_class, options))
    trainer = OnlineRLTrainer(backbone, _config(epochs=2, prompts_per_epoch=2, learning_rate=1e-3),
                              {"brightness": Brightness()}, Path(work) / "run", accelerator=accelerator)
    trainer.train(PROMPTS)
    Path(work, f"rank{accelerator.process_index}.json").write_text(json.dumps(
        {"processes": accelerator.num_processes, "groups": trainer._groups(len(PROMPTS))}))


def _launch(model_dir: str, work: Path, processes: int) -> None:
    work.mkdir()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PREFOPT_LOAD_PLUGINS": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               __file__, model_dir, str(work)]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_share_the_groups_and_train_the_lora_one_process_trains(tmp_path, tiny_model_dir):
    model_dir = tiny_model_dir("hunyuan-video")
    _launch(model_dir, tmp_path / "one", 1)
    _launch(model_dir, tmp_path / "two", 2)
    infos = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["processes"] for i in infos] == [2, 2]
    assert infos[0]["groups"] != infos[1]["groups"]  # each rank samples its own groups
    one, two = (_lora(tmp_path / name / "run" / "lora" / "pytorch_lora_weights.safetensors") for name in ("one", "two"))
    for key in one:  # the same samples and advantages; only the order of summation differs
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-5)
    records = [json.loads((tmp_path / n / "run" / "rollouts" / "epoch-0002.json").read_text()) for n in ("one", "two")]
    assert sorted(s["seed"] for s in records[0]["samples"]) == sorted(s["seed"] for s in records[1]["samples"])


if __name__ == "__main__":
    _train_on_ranks(sys.argv[1], sys.argv[2])


@pytest.mark.parametrize("algorithm", ["grpo", "nft"])
def test_offloading_activations_trains_the_same_lora(tmp_path, make_backbone, algorithm):
    """`offload_activations` (inherited from the DPO trainer's levers) moves saved tensors to the host: same math."""
    kept, _ = _train(make_backbone("hunyuan-video"), tmp_path, "kept", algorithm=algorithm, epochs=1)
    offloaded, _ = _train(make_backbone("hunyuan-video"), tmp_path, "offloaded", algorithm=algorithm, epochs=1,
                          offload_activations=True)
    expected, got = _lora(kept), _lora(offloaded)
    assert all(torch.equal(got[k], expected[k]) for k in expected)

import pytest

"""Two CPU processes (gloo) train the same LoRA: both ranks must end with identical weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.slow  # end to end: runs the whole thing (`pytest -m "not slow"` skips it)


def _train_on_two_ranks(model_dir: str, work: str, schedule: str) -> None:
    # Runs in each rank launched by torchrun (gloo process group on CPU).
    from accelerate import Accelerator

    from prefopt.config import parse
    from prefopt.data import PreferenceExample
    from prefopt.lora import lora_state_dict
    from prefopt.media import write_media
    from prefopt.plugins import get_registry
    from prefopt.trainer import DiffusionDPOTrainer, TrainerConfig

    accelerator = Accelerator(cpu=True)
    entry = get_registry().get("backbones", "hunyuan-video")
    options = {"pretrained": model_dir, "dtype": "float32", "device": "cpu", "use_prompt_template": False,
               "max_sequence_length": 16}
    backbone = entry.cls(parse(entry.config_class, options))
    rng = np.random.default_rng(0)  # same media on both ranks; the trainer shards the pairs
    videos = [str(write_media(Path(work) / f"v{i}.mp4", rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)))
              if accelerator.is_main_process else str(Path(work) / f"v{i}.mp4") for i in range(8)]
    accelerator.wait_for_everyone()
    examples = [PreferenceExample(f"prompt {i}", videos[2 * i], videos[2 * i + 1]) for i in range(4)]
    config = TrainerConfig(max_steps=3, learning_rate=1e-3, lora_rank=4, lora_alpha=4, beta=100.0,
                           report_to="none", num_frames=5, height=32, width=32, checkpoint_every=100,
                           dpo_schedule=schedule)
    trainer = DiffusionDPOTrainer(backbone, config, Path(work) / "run", accelerator=accelerator)
    trainer.train(examples)
    rank = accelerator.process_index
    save_file(lora_state_dict(backbone.denoiser), str(Path(work) / f"rank{rank}.safetensors"))
    batch_prompts = [examples[i].prompt for i in trainer._indices(len(examples), 0)]
    info = {"num_processes": accelerator.num_processes, "first_batch": batch_prompts}
    Path(work, f"rank{rank}.json").write_text(json.dumps(info))


def _two_ranks(tmp_path, model_dir: str, schedule: str) -> dict[str, torch.Tensor]:
    """Trains on two torchrun ranks; checks they saw different pairs and ended identical; returns the LoRA."""
    # A fresh interpreter per rank via torchrun, as users launch it: forking this (already multi-threaded)
    # pytest process would deadlock OpenMP in the children.
    work = tmp_path / schedule
    work.mkdir()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PREFOPT_LOAD_PLUGINS": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               __file__, model_dir, str(work), schedule]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    infos = [json.loads((work / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["num_processes"] for i in infos] == [2, 2]
    assert infos[0]["first_batch"] != infos[1]["first_batch"], "both ranks trained on the same pairs"
    rank0, rank1 = (load_file(str(work / f"rank{r}.safetensors")) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0)
    assert any(v.abs().sum() > 0 for k, v in rank0.items() if "lora_B" in k)
    return rank0


def test_two_processes_train_identical_lora(tmp_path, tiny_model_dir):
    """Both schedules under DDP: `split` runs several forward/backward pairs per step (and a no-grad forward
    between one of them), and must train the LoRA that `joint` trains."""
    model_dir = tiny_model_dir("hunyuan-video")
    joint, split = (_two_ranks(tmp_path, model_dir, schedule) for schedule in ("joint", "split"))
    for key in joint:  # Adam moves each element by ~lr per step: rounding shows at a tenth of lr (1e-3)
        torch.testing.assert_close(split[key], joint[key], rtol=0, atol=1e-4)


if __name__ == "__main__":
    _train_on_two_ranks(sys.argv[1], sys.argv[2], sys.argv[3])

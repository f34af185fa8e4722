"""`prefopt sample`: media from the base model, a LoRA file, or a run's final model, into a folder that says what
made it; a folder of another model is refused rather than mixed."""

import json

import numpy as np
import pytest

from prefopt.cli import main
from prefopt.lora import lora_state_dict
from prefopt.media import read_media


def _base_args(tiny_model_dir, out):
    return ["--backbone", "sd3", "--option", f"pretrained={tiny_model_dir('sd3')}", "--option", "dtype=float32",
            "--option", "device=cpu", "--steps", "2", "--height", "32", "--width", "32", "--out", str(out)]


def test_the_base_model_samples_every_prompt_and_seed_and_a_rerun_makes_nothing_again(tiny_model_dir, tmp_path,
                                                                                        capsys):
    out = tmp_path / "base"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\n\n")
    args = ["sample", "base", "--prompt", "a cat", "--prompts-file", str(prompts), "--seeds", "0", "1",
            *_base_args(tiny_model_dir, out)]
    assert main(args) == 0
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == ["000-seed0.png", "000-seed1.png", "001-seed0.png", "001-seed1.png"]
    record = json.loads((out / "sample.json").read_text())
    assert record["samples"]["001-seed1"] == {"prompt": "a red fox", "seed": 1} and record["loras"] == []
    assert record["sampling"]["num_inference_steps"] == 2 and record["sampling"]["height"] == 32
    made = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert main(args) == 0 and {p: p.stat().st_mtime_ns for p in out.glob("*.png")} == made
    assert main([*args, "--batch-size", "2"]) == 0  # how the samples are batched does not change them
    assert "4 samples in" in capsys.readouterr().out


def test_a_lora_file_changes_the_samples_and_another_model_is_refused_in_the_same_folder(
        tiny_model_dir, make_backbone, with_lora, tmp_path, capsys):
    backbone = with_lora(make_backbone("sd3"), b_std=0.5)
    lora = backbone.save_lora(tmp_path / "lora", lora_state_dict(backbone.denoiser))
    assert main(["sample", "base", "--prompt", "a cat", *_base_args(tiny_model_dir, tmp_path / "base")]) == 0
    assert main(["sample", str(lora.parent), "--prompt", "a cat", *_base_args(tiny_model_dir, tmp_path / "lora-out")]) == 0
    base, adapted = (read_media(tmp_path / name / "000-seed0.png") for name in ("base", "lora-out"))
    assert np.abs(base.astype(float) - adapted.astype(float)).max() > 0
    record = json.loads((tmp_path / "lora-out" / "sample.json").read_text())
    assert record["loras"][0]["path"] == str(lora) and len(record["loras"][0]["digest"]) > 8
    capsys.readouterr()
    assert main(["sample", "base", "--prompt", "a cat", *_base_args(tiny_model_dir, tmp_path / "lora-out")]) == 2
    assert "holds samples of another model, LoRA or settings" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["base", "--prompt", "x"], "`base` does not say which model it belongs to: add `--backbone NAME`"),
    (["nowhere", "--prompt", "x", "--backbone", "sd3"], "`nowhere` is neither a run directory"),
    (["base", "--backbone", "sd3"], "no prompt: add `--prompt TEXT` or `--prompts-file FILE`"),
    (["base", "--prompt", "x", "--backbone", "sd3", "--steps", "0"], "`--steps` must be at least 1, got 0"),
    (["base", "--prompt", "x", "--backbone", "sd3", "--option", "pretrained=/no/such/model"], "/no/such/model"),
    (["base", "--prompt", "x", "--backbone", "sd3", "--option", "nope=1"], "nope"),
])
def test_what_cannot_be_sampled_is_one_sentence(args, message, capsys):
    assert main(["sample", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("prefopt: error: "), err

"""A finished run's publish folder (final LoRAs, model card, config, figures) and `prefopt push`, tested against a
local folder target (the Hub upload itself needs the network and is not run here)."""

import pytest
import yaml
from safetensors.torch import load_file

from prefopt.cli import main
from prefopt.errors import PrefoptError
from prefopt.publish import check_publish_folder, usage_code
from tests import ROOT


@pytest.mark.slow
def test_a_finished_run_writes_a_model_card_that_a_push_to_a_folder_copies(pick_a_pic, tmp_path, capsys):
    data = pick_a_pic(tmp_path / "pairs.parquet")
    args = ["run", str(ROOT / "recipes" / "dpo.yaml"), f"data.path={data}", "backbone.name=sdxl",
            f"backbone.options.pretrained={tmp_path / 'models' / 'sdxl'}", "backbone.options.dtype=float32",
            "backbone.options.device=cpu", "run.build_tiny_models=true", f"run.output_dir={tmp_path / 'runs'}",
            "trainer.max_steps=2", "trainer.height=32", "trainer.width=32", "trainer.mixed_precision=no"]
    assert main(args) == 0
    run = tmp_path / "runs" / "dpo"
    assert f"model card and files to publish: {run / 'publish'}/" in " ".join(capsys.readouterr().out.split())
    folder = run / "publish"
    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert "base_model" not in meta and meta["library_name"] == "diffusers"  # a local folder is no hub id
    assert "a local folder: put the base model's hub id in `base_model`" in card
    assert meta["pipeline_tag"] == "text-to-image" and {"lora", "prefopt", "dpo"} <= set(meta["tags"])
    assert "| train | DPO 2 steps on 3 pairs |" in card and "learning_rate" in card and "max_steps 2" in card
    assert "StableDiffusionXLPipeline.from_pretrained" in card and "load_lora_weights" in card
    assert yaml.safe_load((folder / "prefopt_config.yaml").read_text())["recipe"] == "dpo"
    trained = next(run.glob("train-*")) / "lora" / "pytorch_lora_weights.safetensors"
    assert load_file(folder / "pytorch_lora_weights.safetensors").keys() == load_file(trained).keys()
    assert main(["push", str(run), "me/tiny-dpo", "--to-folder", str(tmp_path / "hub")]) == 0
    pushed = tmp_path / "hub" / "me" / "tiny-dpo"
    assert sorted(p.name for p in pushed.iterdir()) == sorted(p.name for p in folder.iterdir())
    capsys.readouterr()
    assert main(["push", str(run), "me/tiny-dpo", "--to-folder", str(tmp_path / "hub")]) == 2
    assert "exists; choose another `--to-folder`" in capsys.readouterr().err


def test_several_loras_load_as_named_adapters_applied_together():
    class Family:
        pipeline_class_name = "HunyuanVideoPipeline"

    text = usage_code(Family, "hunyuanvideo-community/HunyuanVideo", ["1-identity_lora.safetensors", "2-stage2.safetensors"])
    assert 'weight_name="1-identity_lora.safetensors", adapter_name="1_identity_lora"' in text
    assert "pipe.set_adapters(['1_identity_lora', '2_stage2'])" in text
    assert 'from_pretrained("hunyuanvideo-community/HunyuanVideo")' in text


def test_a_folder_without_card_metadata_or_lora_is_not_published(tmp_path):
    (tmp_path / "README.md").write_text("# no metadata\n")
    with pytest.raises(PrefoptError, match="has no metadata block"):
        check_publish_folder(tmp_path)
    (tmp_path / "README.md").write_text("---\nlibrary_name: diffusers\n---\n# card\n")
    (tmp_path / "prefopt_config.yaml").write_text("recipe: dpo\n")
    with pytest.raises(PrefoptError, match="holds no LoRA file"):
        check_publish_folder(tmp_path)


def test_push_of_a_directory_that_is_no_finished_run_is_one_sentence(tmp_path, capsys):
    assert main(["push", str(tmp_path), "me/x", "--to-folder", str(tmp_path / "hub")]) == 2
    assert "has no readable `config.json`" in capsys.readouterr().err

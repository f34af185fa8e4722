"""A finished run as a folder to publish: its final LoRAs, a model card in diffusers' LoRA conventions, the config and
the report's figures; ``prefopt push`` uploads that folder to the Hugging Face Hub, only when asked.

The card (``README.md``) opens with the YAML metadata the Hub reads (``base_model``, ``library_name: diffusers``,
``pipeline_tag``, ``tags``), then says what was trained, how (the recipe, its stages with their summaries, the
configuration), what the evaluation measured (the recipe's own table), and how to load the LoRAs with diffusers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml

from prefopt.data import verify_safetensors
from prefopt.errors import PrefoptError
from prefopt.files import write_folder, write_text
from prefopt.hub import looks_like_hub_id
from prefopt.layout import LORA_WEIGHTS_NAME, RunLayout

CARD_NAME, CONFIG_NAME = "README.md", "prefopt_config.yaml"
FIGURES = ("training.png", "rewards.png", "health.png", "timings.png")
TRAINER_SETTINGS = ("mode", "algorithm", "learning_rate", "max_steps", "epochs", "beta", "lora_rank", "lora_alpha",
                    "mixed_precision")


def publish_folder(run_dir: Path) -> Path:
    """Write ``<run>/publish/`` for a finished run (replacing an earlier one whole) and return it."""
    from prefopt.interfaces import HasResultLoras
    from prefopt.sampling import finished_recipe

    run_dir = Path(run_dir)
    recipe, config = finished_recipe(run_dir)
    if not isinstance(recipe, HasResultLoras):
        raise PrefoptError(f"recipe `{recipe.name}` does not say which LoRAs make its final model: nothing to publish.")
    layout = RunLayout(run_dir)
    loras = recipe.result_loras(layout)
    # Several LoRAs: numbered in the order they apply, so adapter names stay unique (two `train` stages chained).
    names = [LORA_WEIGHTS_NAME] if len(loras) == 1 else [f"{i}-{p.parent.parent.name.rsplit('-', 1)[0]}.safetensors"
                                                          for i, p in enumerate(loras, 1)]
    figures = [layout.report_dir / name for name in FIGURES if (layout.report_dir / name).is_file()]

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        for source, name in zip(loras, names):
            _link_or_copy(source, tmp / name)
        for figure in figures:
            shutil.copyfile(figure, tmp / figure.name)
        write_text(tmp / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))
        write_text(tmp / CARD_NAME, model_card(config, layout, names, [f.name for f in figures]))

    folder = run_dir / "publish"
    write_folder(folder, write, check=lambda tmp: check_publish_folder(tmp), replaces=CARD_NAME)
    return folder


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no second copy of a large LoRA on disk; prefopt replaces files, never rewrites them in place),
    or a copy where the file system cannot link."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def model_card(config: dict, layout: RunLayout, lora_names: list[str], figures: list[str]) -> str:
    """The card's text: Hub metadata, then what, how, the evaluation and how to use it."""
    from prefopt.plugins import get_registry

    backbone = config["backbone"]
    cls = get_registry().get("backbones", backbone["name"]).cls
    base = str(backbone.get("options", {}).get("pretrained", ""))
    task = "text-to-image" if getattr(cls, "media", "video") == "image" else "text-to-video"
    meta = {"library_name": "diffusers", "pipeline_tag": task,
            "tags": ["lora", "diffusers", "prefopt", config["recipe"], task]}
    if looks_like_hub_id(base):  # the Hub takes a model id only; a local folder is named in the text instead
        meta = {"base_model": base, **meta}
    stages = json.loads(layout.index.read_text())
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
             f"# {layout.root.name}: LoRA for {getattr(cls, 'model_label', backbone['name'])}", "",
             f"Trained with prefopt's `{config['recipe']}` recipe on `{base}`"
             + ("." if looks_like_hub_id(base) else " (a local folder: put the base model's hub id in `base_model` "
                                                    "above before sharing)."), "", "## How it was trained", ""]
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    settings = [f"{key} {trainer[key]}" for key in TRAINER_SETTINGS if trainer.get(key) is not None]
    if settings:
        lines += [f"Trainer: {', '.join(settings)}.", ""]
    lines += ["| stage | what it did | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {record.get('summary', '')} | {record.get('seconds', 0):.0f} |"
              for name, record in stages.items()]
    lines += ["", (f"The whole configuration is `{CONFIG_NAME}`: `prefopt run {CONFIG_NAME}` repeats the run where "
                   "its data and model paths hold.")]
    table = _evaluation_table(layout, stages)
    if table:
        lines += ["", "## Evaluation", "", table.strip()]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    lines += ["", "## Use it", "", "```python", usage_code(cls, base, lora_names), "```", ""]
    return "\n".join(lines)


def _evaluation_table(layout: RunLayout, stages: dict) -> str | None:
    if "evaluation" not in stages:
        return None
    table = layout.current("evaluation").path / "table.md"
    return table.read_text() if table.is_file() else None


def usage_code(cls, base: str, lora_names: list[str]) -> str:
    """The card's loading code: the pipeline's own ``load_lora_weights`` when diffusers has a LoRA loader for it,
    else peft on the denoiser (the file's metadata holds the adapter's config)."""
    pipeline = getattr(cls, "pipeline_class_name", "DiffusionPipeline")
    source = base if looks_like_hub_id(base) else "<the base model's hub id or folder>"
    if hasattr(cls, "has_lora_loader") and not cls.has_lora_loader():
        return _peft_usage(cls, pipeline, source, lora_names)
    lines = [f"from diffusers import {pipeline}", "", f'pipe = {pipeline}.from_pretrained("{source}")']
    if len(lora_names) == 1:
        lines.append('pipe.load_lora_weights("<this repository or folder>")')
        return "\n".join(lines)
    adapters = []
    for name in lora_names:  # applied together, in this order (e.g. MagicID: the identity LoRA, then the DPO one)
        adapter = Path(name).stem.replace("-", "_")  # numbered: unique
        adapters.append(adapter)
        lines.append(f'pipe.load_lora_weights("<this repository or folder>", weight_name="{name}", '
                     f'adapter_name="{adapter}")')
    lines.append(f"pipe.set_adapters({adapters!r})")
    return "\n".join(lines)


def _peft_usage(cls, pipeline: str, source: str, lora_names: list[str]) -> str:
    denoiser = getattr(cls, "denoiser_attribute", "transformer")
    adapters = [Path(name).stem.replace("-", "_") for name in lora_names]
    return "\n".join([
        "import json",
        "import os",
        "",
        f"from diffusers import {pipeline}",
        "from huggingface_hub import hf_hub_download",
        "from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict",
        "from peft.tuners.tuners_utils import BaseTunerLayer",
        "from safetensors import safe_open",
        "",
        f'pipe = {pipeline}.from_pretrained("{source}")',
        f"# diffusers has no LoRA loader for {pipeline}: peft adds each file's adapter to the {denoiser}.",
        f"model = pipe.{denoiser}",
        'source = "<this repository or folder>"',
        f"adapters = {dict(zip(adapters, lora_names))!r}",
        "for adapter, file in adapters.items():",
        "    path = os.path.join(source, file) if os.path.isdir(source) else hf_hub_download(source, file)",
        '    with safe_open(path, framework="pt") as f:',
        '        config = json.loads(f.metadata()["lora_adapter_metadata"])',
        "        config = {key.split('.', 1)[1]: value for key, value in config.items()}",
        "        weights = {key.split('.', 1)[1]: f.get_tensor(key) for key in f.keys()}",
        "    inject_adapter_in_model(LoraConfig(**config), model, adapter_name=adapter)",
        "    set_peft_model_state_dict(model, weights, adapter_name=adapter)",
        "for module in model.modules():  # every adapter active, in this order",
        "    if isinstance(module, BaseTunerLayer):",
        "        module.set_adapter(list(adapters))",
        "model.eval()  # peft makes its dropout modules in training mode",
    ])


def check_publish_folder(folder: Path) -> None:
    """What a push would upload reads back: the card's metadata, the config, every LoRA file."""
    card = (folder / CARD_NAME).read_text() if (folder / CARD_NAME).is_file() else ""
    if not card.startswith("---\n") or card.count("\n---\n") < 1:
        raise PrefoptError(f"`{folder / CARD_NAME}` has no metadata block.")
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    if not isinstance(meta, dict) or meta.get("library_name") != "diffusers":
        raise PrefoptError(f"`{folder / CARD_NAME}`'s metadata lacks `library_name: diffusers`.")
    yaml.safe_load((folder / CONFIG_NAME).read_text())
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise PrefoptError(f"`{folder}` holds no LoRA file.")
    for path in weights:
        verify_safetensors(path, "published LoRA")


def push(run_dir: Path, repo_id: str, *, private: bool = False, to_folder: Path | None = None) -> str:
    """Write and check the run's publish folder, then upload it to ``repo_id`` (or copy it to ``to_folder``, the
    same files a push would send); returns where it went."""
    folder = publish_folder(run_dir)
    if to_folder is not None:
        target = Path(to_folder) / repo_id
        if target.exists():
            raise PrefoptError(f"`{target}` exists; choose another `--to-folder`.")
        shutil.copytree(folder, target)
        return str(target)
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="Upload LoRA trained with prefopt")
    except (HfHubHTTPError, OSError) as e:
        raise PrefoptError(f"the upload to `{repo_id}` failed ({e}); the folder to publish is `{folder}` (log in "
                           "with `hf auth login`, or pass `--to-folder DIR` to copy it instead).") from e
    return str(getattr(commit, "commit_url", repo_id))

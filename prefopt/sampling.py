"""Sampling media for named (prompt, seed) jobs, in batches, resumable: the loop every recipe and ``prefopt sample``
share. A job whose file already exists is not made again, so a killed command resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prefopt import contract
from prefopt.data import save_tensors, tensors_digest
from prefopt.errors import PrefoptError
from prefopt.files import write_json
from prefopt.interfaces import HasResultLoras
from prefopt.media import write_media
from prefopt.progress import progress_bar


@dataclass(frozen=True)
class SampleJob:
    """One sample to make: its name (file stem, repository item id), prompt and seed."""

    name: str
    prompt: str
    seed: int


@dataclass(frozen=True)
class Sampling:
    """How samples are drawn: size, sampler steps, guidance, batch and the frame rate of written videos."""

    num_frames: int
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    fps: int = 8
    batch_size: int = 1

    @classmethod
    def of(cls, options, **changes) -> Sampling:
        """From any options with these fields (a recipe's `video`, `sampling` or `evaluation` block)."""
        fields = {name: getattr(options, name) for name in cls.__dataclass_fields__ if hasattr(options, name)}
        return cls(**{**fields, **changes})

    @property
    def suffix(self) -> str:
        return ".png" if self.num_frames == 1 else ".mp4"  # image backbones write images


Written = Callable[[list[SampleJob], list[Path], list[Path | None]], None]


def sample_files(backbone, jobs: Sequence[SampleJob], sampling: Sampling, media_dir: Path, *,
                 latent_dir: Path | None = None, description: str, on_written: Written | None = None,
                 show_progress: bool = True, skip_existing: bool = True) -> list[Path]:
    """Make ``media_dir/<name><suffix>`` (and ``latent_dir/<name>.safetensors``) for every job, in batches, skipping
    those whose media file is there (unless not ``skip_existing``: the caller keeps its own record of what is done);
    ``on_written(jobs, media, latents)`` after each batch. Returns every job's media path."""
    paths = [media_dir / f"{job.name}{sampling.suffix}" for job in jobs]
    todo = [(job, path) for job, path in zip(jobs, paths) if not (skip_existing and path.is_file())]
    with progress_bar(description, len(todo), enabled=show_progress) as bar:
        for start in range(0, len(todo), sampling.batch_size):
            batch = todo[start : start + sampling.batch_size]
            made = contract.generate(
                backbone, [job.prompt for job, _ in batch], [job.seed for job, _ in batch],
                num_frames=sampling.num_frames, height=sampling.height, width=sampling.width,
                num_inference_steps=sampling.num_inference_steps, guidance_scale=sampling.guidance_scale)
            latents: list[Path | None] = []
            for (job, path), media in zip(batch, made):
                write_media(path, media.frames, fps=sampling.fps)
                latent = latent_dir / f"{job.name}.safetensors" if latent_dir is not None else None
                if latent is not None:
                    save_tensors(latent, {"latents": media.latents})
                latents.append(latent)
            if on_written is not None:
                on_written([job for job, _ in batch], [path for _, path in batch], latents)
            bar.advance(len(batch))
    return paths


# --- `prefopt sample`: media from a base model with the LoRAs of a run or a file -------------------------------------

SETTINGS = ("num_frames", "height", "width", "num_inference_steps", "guidance_scale")
RECORD_NAME = "sample.json"


@dataclass
class SampleRequest:
    """What ``prefopt sample`` was asked for (the command line's arguments)."""

    source: str
    prompts: list[str]
    seeds: list[int]
    out: Path | None = None
    backbone: str | None = None
    options: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # the SETTINGS given on the command line
    fps: int = 8
    batch_size: int = 1


def resolve_source(request: SampleRequest) -> tuple[dict, list[Path], dict, Path]:
    """(backbone spec as data, LoRA files, the run's sampling settings, default output folder) of a run directory,
    a LoRA file or folder, or ``base``."""
    from prefopt.layout import LORA_WEIGHTS_NAME, RunLayout

    source = Path(request.source)
    if (source / "stages.json").is_file():
        recipe, config = finished_recipe(source)
        if not isinstance(recipe, HasResultLoras):
            raise PrefoptError(f"recipe `{recipe.name}` does not say which LoRAs make its final model: sample a LoRA "
                               "file with `--backbone`.")
        loras = recipe.result_loras(RunLayout(source))
        return config["backbone"], loras, _run_settings(config), source / "samples"
    if request.source == "base":
        loras = []
    elif source.is_file() or (source / LORA_WEIGHTS_NAME).is_file():
        loras = [source if source.is_file() else source / LORA_WEIGHTS_NAME]
    else:
        raise PrefoptError(f"`{request.source}` is neither a run directory (with stages.json), a LoRA file or folder "
                           f"(with {LORA_WEIGHTS_NAME}), nor `base`.")
    if not request.backbone:
        raise PrefoptError(f"`{request.source}` does not say which model it belongs to: add `--backbone NAME` and its "
                           "options, e.g. `--option pretrained=<hub id or folder>`.")
    return {"name": request.backbone, "options": {}}, loras, {}, Path("samples")


def finished_recipe(run_dir: Path):
    """The recipe of a finished run directory, rebuilt from its `config.json`, and that config."""
    from prefopt.runner import RECIPE_KEY, load_recipe

    record = run_dir / "config.json"
    try:
        config = json.loads(record.read_text())
    except (OSError, ValueError) as e:
        raise PrefoptError(f"run `{run_dir}` has no readable `config.json` (it is written when every stage has "
                           "finished): finish the run, or sample its LoRA file with `--backbone`.") from e
    if RECIPE_KEY not in config:
        raise PrefoptError(f"`{record}` does not name its recipe (runs before prefopt recorded it): sample its LoRA "
                           "file with `--backbone` instead.")
    return load_recipe(record, []), config


def _run_settings(config: dict) -> dict:
    """The run's own sampling settings: its evaluation's, else its sampling's, else its video size or the size it
    trained at."""
    found: dict = {}
    for block in ("evaluation", "sampling", "video", "trainer"):
        options = config.get(block) if isinstance(config.get(block), dict) else {}
        found.update({k: options[k] for k in SETTINGS if options.get(k) is not None and k not in found})
    return found


def pipeline_defaults(backbone) -> dict:
    """Size from the backbone's defaults; steps and guidance from its pipeline's own ``__call__`` defaults."""
    import inspect

    height, width = backbone.default_resolution
    frames = 1 if backbone.media == "image" else backbone.default_num_frames
    parameters = inspect.signature(type(backbone.pipe).__call__).parameters
    defaults = {"num_frames": frames, "height": height, "width": width, "num_inference_steps": 30,
                "guidance_scale": 5.0}
    for name in ("num_inference_steps", "guidance_scale"):
        value = parameters[name].default if name in parameters else inspect.Parameter.empty
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            defaults[name] = value
    return defaults


def sample(request: SampleRequest) -> list[Path]:
    """``prefopt sample``: every prompt × seed from the base model with the source's LoRAs, into one folder whose
    ``sample.json`` says what made it (a folder of another model or other settings is refused, not mixed)."""
    from prefopt.config import BackboneSpec, apply_overrides, parse, to_dict
    from prefopt.errors import MissingWeightsError
    from prefopt.plugins import get_registry
    from prefopt.runner import missing_component_weights

    spec, loras, settings, default_out = resolve_source(request)
    for lora in loras:
        if not lora.is_file():
            raise PrefoptError(f"LoRA file `{lora}` does not exist.")
    registry = get_registry()
    options = apply_overrides(dict(spec.get("options") or {}), list(request.options))
    config = parse(registry.get("backbones", spec["name"]).config_class, options, "backbone.options", registry)
    missing = missing_component_weights([BackboneSpec(name=spec["name"], options=config)])
    if missing:
        raise MissingWeightsError(missing[0])
    backbone = registry.create("backbones", spec["name"], config)
    sampling = Sampling(**{**pipeline_defaults(backbone), **settings, **request.settings}, fps=request.fps,
                        batch_size=request.batch_size)
    backbone.check_media_size(sampling.num_frames, sampling.height, sampling.width)
    out = Path(request.out or default_out)
    jobs = [SampleJob(f"{p:03d}-seed{seed}", prompt, seed) for p, prompt in enumerate(request.prompts)
            for seed in request.seeds]
    made_by = {"backbone": {"name": spec["name"], "options": to_dict(config)}, "sampling": to_dict(sampling),
               "loras": [{"path": str(path), "digest": tensors_digest(path)} for path in loras]}
    _claim(out, made_by, jobs)
    backbone.use_loras(loras)
    return sample_files(backbone, jobs, sampling, out, description=f"sampling {len(jobs)} from {request.source}")


def _what_makes_the_media(made_by: dict) -> dict:
    """What decides the samples' content: not where the model runs, the batch size, or how a LoRA's path is
    spelled (its tensors' digest)."""
    backbone = made_by.get("backbone", {})
    options = {k: v for k, v in (backbone.get("options") or {}).items() if k != "device"}
    sampling = {k: v for k, v in (made_by.get("sampling") or {}).items() if k != "batch_size"}
    return {"backbone": backbone.get("name"), "options": options, "sampling": sampling,
            "loras": [entry.get("digest") for entry in made_by.get("loras", [])]}


def _claim(out: Path, made_by: dict, jobs: list[SampleJob]) -> None:
    """Record what makes the folder's samples, refusing a folder another model or other settings made (its files
    would be taken as done); the prompt and seed of every sample name are kept beside."""
    record = out / RECORD_NAME
    earlier = json.loads(record.read_text()) if record.is_file() else {}
    if earlier and _what_makes_the_media(earlier) != _what_makes_the_media(made_by):
        raise PrefoptError(f"`{out}` holds samples of another model, LoRA or settings (see `{record}`); choose "
                           "another `--out`.")
    samples = dict(earlier.get("samples", {}))
    for job in jobs:
        if samples.get(job.name, {}).get("prompt", job.prompt) != job.prompt:
            raise PrefoptError(f"`{out}` already has a sample `{job.name}` of another prompt; choose another `--out`.")
        samples[job.name] = {"prompt": job.prompt, "seed": job.seed}
    out.mkdir(parents=True, exist_ok=True)
    write_json(record, {**made_by, "samples": samples})

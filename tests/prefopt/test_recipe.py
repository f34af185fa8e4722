"""The skeleton a recipe is: a config and a list of stages. A toy recipe gets running, resuming, records, clean."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from prefopt.files import write_text
from prefopt.layout import StageFolder
from prefopt.recipe import StagedRecipe
from prefopt.stages import RunResult, Stage
from prefopt_recipes.common.config import RunConfig


@dataclass
class CountConfig:
    upto: int = field(default=3, metadata={"help": "Count to this."})
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "Run folder."})


class CountRecipe(StagedRecipe):
    """Writes the numbers up to `upto`, then their sum: two stages, the second taking the first's delivery."""

    name = "count"
    Config = CountConfig
    made: ClassVar[list[str]] = []  # what the stages made, across runs

    def stages(self) -> list[Stage]:
        return [Stage("numbers", [self.config.upto], self.write_numbers, read_numbers),
                Stage("total", [], self.write_total, read_total, inputs=("numbers",))]

    def components(self):
        return []

    def write_numbers(self, folder: StageFolder) -> str:
        CountRecipe.made.append("numbers")
        write_text(folder.path / "numbers.txt", " ".join(map(str, range(1, self.config.upto + 1))))
        return f"{self.config.upto} numbers"

    def write_total(self, folder: StageFolder, numbers: list[int]) -> str:
        CountRecipe.made.append("total")
        write_text(folder.path / "total.txt", str(sum(numbers)))
        return "summed"

    def write_report(self, result: RunResult) -> Path:
        write_text(result.layout.report, f"total {result['total']} from {result.folder('numbers').name}")
        return result.layout.report


def read_numbers(folder: StageFolder) -> list[int]:
    return [int(n) for n in (folder.path / "numbers.txt").read_text().split()]


def read_total(folder: StageFolder, numbers: list[int]) -> int:
    return int((folder.path / "total.txt").read_text())


def test_a_config_and_a_list_of_stages_run_resume_report_and_clean(tmp_path):
    CountRecipe.made = []
    config = CountConfig(run=RunConfig(name="c", output_dir=str(tmp_path)))
    recipe = CountRecipe(config)
    recipe.prepare()
    assert recipe.missing_requirements() == []
    run = recipe.run()
    assert (run / "report" / "index.html").read_text().startswith("total 6 from numbers-")
    assert json.loads((run / "config.json").read_text())["upto"] == 3
    CountRecipe(config).run()
    assert CountRecipe.made == ["numbers", "total"]  # the second run read both deliveries back
    changed = CountConfig(upto=4, run=config.run)
    CountRecipe(changed).run()
    assert CountRecipe.made[-2:] == ["numbers", "total"]
    assert (run / "report" / "index.html").read_text().startswith("total 10")
    removed = CountRecipe(changed).clean()
    assert sorted(p.name.split("-")[0] for p in removed) == ["numbers", "total"]  # the upto=3 folders


def test_the_final_lora_is_refused_while_its_stage_is_unfinished_or_on_another_backbone(tmp_path):
    """`prefopt sample` and `push` describe the model with the finished config: a later attempt's running stage,
    or one trained on another backbone, is not passed off as that model."""
    import json

    from prefopt.errors import PrefoptError
    from prefopt.layout import RunLayout
    from prefopt.recipe import finished_lora

    layout = RunLayout(tmp_path)
    folder = layout.stage("train", "abc")
    folder.lora.parent.mkdir(parents=True)
    folder.lora.write_bytes(b"weights")
    finished = {"recipe": "dpo", "backbone": {"name": "sdxl", "options": {"pretrained": "a"}}}
    layout.config.write_text(json.dumps(finished))
    folder.config.write_text(json.dumps(finished))
    layout.index.write_text(json.dumps({"train": {"hash": "abc", "status": "running"}}))
    with pytest.raises(PrefoptError, match="stage `train` of run .* has not finished"):
        finished_lora(layout, "train")
    layout.index.write_text(json.dumps({"train": {"hash": "abc", "status": "done"}}))
    assert finished_lora(layout, "train") == folder.lora
    folder.config.write_text(json.dumps({**finished, "backbone": {"name": "sd3", "options": {}}}))
    with pytest.raises(PrefoptError, match="was trained on another backbone"):
        finished_lora(layout, "train")

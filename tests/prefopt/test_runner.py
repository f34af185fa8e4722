"""From a YAML to a configured recipe, and the checks before any work."""

import pytest

from prefopt.config import BackboneSpec
from prefopt.errors import ConfigError, MissingWeightsError
from prefopt.runner import check_requirements, load_config, missing_component_weights


def test_a_config_must_name_a_registered_recipe(tmp_path):
    (tmp_path / "a.yaml").write_text("run: {name: x}\n")
    with pytest.raises(ConfigError, match="must name its recipe with a top-level `recipe:` key"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("recipe: magicd\n")
    with pytest.raises(ConfigError, match="Did you mean `magicid`"):
        load_config(tmp_path / "b.yaml")


def test_missing_weights_are_asked_of_the_components_that_can_tell(tmp_path):
    from prefopt.plugins import get_registry

    options = get_registry().get("backbones", "sdxl").config_class(pretrained=str(tmp_path / "none"))
    messages = missing_component_weights([BackboneSpec(name="sdxl", options=options)])
    assert len(messages) == 1 and f"`{tmp_path / 'none'}`" in messages[0]


def test_every_missing_requirement_is_listed_one_per_line():
    class Recipe:
        name = "r"

        def missing_requirements(self):
            return ["weights A are missing.", "photo B does not exist."]

        def check_inputs(self):
            raise AssertionError("inputs are opened only when nothing is missing")

    with pytest.raises(MissingWeightsError, match=r"cannot start:\n  \(1\) weights A are missing.\n  \(2\) photo B"):
        check_requirements(Recipe())

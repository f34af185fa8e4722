"""Option references generated from the config dataclasses: every field has help, and docs/options.md is current."""



from prefopt.cli import main
from tests import ROOT


def test_every_option_of_every_built_in_component_and_the_trainer_has_help():
    from prefopt.config import help_text
    from prefopt.plugins import get_registry
    from prefopt.registry import KINDS
    from prefopt.trainer import TrainerConfig

    classes = [TrainerConfig] + [e.config_class for kind in KINDS for e in get_registry().all(kind)]
    missing = [f"{cls.__name__}.{key}" for cls in classes for key, _, _, text in help_text(cls) if not text.strip()]
    assert not missing, missing


def test_the_options_reference_in_docs_is_the_generated_one():
    from prefopt.options import reference_markdown

    assert (ROOT / "docs" / "options.md").read_text() == reference_markdown(), (
        "docs/options.md is stale: regenerate it with `PREFOPT_LOAD_PLUGINS= prefopt options --markdown > docs/options.md`")


def test_prefopt_options_shows_a_components_options_and_names_the_choices(capsys):
    assert main(["options", "sdxl", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| `pretrained` | a string | `\"stabilityai/stable-diffusion-xl-base-1.0\"` |" in out
    assert main(["options", "trainer"]) == 0 and "beta" in capsys.readouterr().out
    assert main(["options", "sdxxl"]) == 2
    assert "nothing named `sdxxl` has options. Did you mean `sdxl`? Choose one of:" in capsys.readouterr().err

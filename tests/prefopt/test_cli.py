"""The command line as a user meets it: exit codes, messages, tracebacks only with --debug."""

import errno
import json
import os
import subprocess
import sys
import types
from dataclasses import dataclass, field

import pytest

from prefopt import hookimpl
from prefopt.cli import main
from tests import ROOT


def _run_cli(*args, env=None):
    full_env = {**os.environ, "PREFOPT_LOAD_PLUGINS": "", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "prefopt", *args], check=False, capture_output=True, text=True, env=full_env, timeout=120
    )


@dataclass
class EchoConfig:
    message: str = field(default="hi", metadata={"help": "What to print."})
    repeat: int = field(default=1, metadata={"help": "How many times."})


class EchoRecipe:
    """Prints a message (a test recipe)."""

    name = "echo"
    Config = EchoConfig

    def __init__(self, config):
        self.config = config

    def prepare(self):
        pass

    def missing_requirements(self):
        return ["the `echo` weights are absent; put them in ./echo."] if self.config.repeat > 5 else []

    def check_inputs(self):
        pass

    def clean(self, dry_run=False):
        return []

    def run(self):
        if self.config.message == "fill the disk":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/lora.safetensors")
        print(self.config.message * self.config.repeat)
        return "nowhere"


@pytest.fixture
def echo_recipe(plugin):
    module = types.ModuleType("echo_plugin")
    module.register_recipes = hookimpl(lambda register: register(EchoRecipe))
    module.register_recipes.__name__ = "register_recipes"
    plugin(module, name="echo-plugin")


def test_run_validate_and_overrides(echo_recipe, tmp_path, capsys):
    config = tmp_path / "echo.yaml"
    config.write_text("recipe: echo\nmessage: ab\n")
    assert main(["run", str(config), "repeat=3"]) == 0
    assert "ababab" in capsys.readouterr().out
    assert main(["validate", str(config)]) == 0
    assert "valid" in capsys.readouterr().out


def test_missing_requirements_exit_2_before_running(echo_recipe, tmp_path, capsys):
    config = tmp_path / "echo.yaml"
    config.write_text("recipe: echo\nrepeat: 9\n")
    assert main(["run", str(config)]) == 2
    captured = capsys.readouterr()
    assert "cannot start:\n  (1) the `echo` weights are absent" in captured.err  # one missing model per line
    assert "ech" not in captured.out


@pytest.mark.slow
def test_misspelt_key_exits_2_with_key_named_and_no_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("recipe: nope\n")
    result = _run_cli("validate", str(config))
    assert result.returncode == 2
    assert "no recipe named `nope`" in result.stderr
    assert "Traceback" not in result.stderr
    debug = _run_cli("--debug", "validate", str(config))
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    after = _run_cli("validate", str(config), "--debug")  # also accepted after the command
    assert after.returncode != 0 and "Traceback" in after.stderr


def test_missing_config_file_is_a_user_error(capsys):
    assert main(["validate", "does/not/exist.yaml"]) == 2
    assert "`does/not/exist.yaml` does not exist" in capsys.readouterr().err


def test_plugins_json_lists_components_with_packages(echo_recipe, capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    echo = [r for r in rows if r["name"] == "echo"]
    assert len(echo) == 1 and echo[0]["class"].endswith("test_cli.EchoRecipe")
    assert {k: echo[0][k] for k in ("kind", "package", "plugin", "summary")} == {
        "kind": "recipe",
        "package": "echo-plugin",
        "plugin": "echo-plugin",
        "summary": "Prints a message (a test recipe).",
    }
    assert main(["plugins"]) == 0
    assert "echo" in capsys.readouterr().out


def test_a_full_disk_is_one_sentence_and_exit_2(echo_recipe, tmp_path, capsys):
    config = tmp_path / "echo.yaml"
    config.write_text("recipe: echo\nmessage: fill the disk\n")
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == ("prefopt: error: no space left on the device (`/runs/x/lora.safetensors`); fix that and run the "
                   "command again: finished work is kept.\n")
    with pytest.raises(OSError):
        main(["run", str(config), "--debug"])


def test_run_help_example_is_a_valid_key(capsys):
    """The example in `prefopt run --help` names a real MagicID key."""
    import dataclasses

    from prefopt.trainer import TrainerConfig
    from prefopt_recipes.magicid.config import MagicIDConfig

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    example = capsys.readouterr().out.split("like `", 1)[1].split("=", 1)[0]
    section, key = example.split(".")
    assert section in {f.name for f in dataclasses.fields(MagicIDConfig)}
    assert key in {f.name for f in dataclasses.fields(TrainerConfig)}








def test_prefopt_plugins_lists_every_first_party_backbone_and_recipe(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    backbones = {r["name"] for r in rows if r["kind"] == "backbone"}
    assert backbones == {"hunyuan-video", "wan", "ltx-video", "cogvideox", "stable-diffusion", "sdxl", "sd3", "flux"}
    assert {r["name"] for r in rows if r["kind"] == "recipe"} >= {"magicid", "dpo", "reward-dpo"}
    assert {"pickscore", "laion-aesthetic"} <= {r["name"] for r in rows if r["kind"] == "reward"}


def test_overrides_may_follow_options():
    """`prefopt select CONFIG --stage stage1 key=value` takes the override; other stray arguments are refused."""
    from prefopt.cli import parse_arguments

    args = parse_arguments(["select", "x.yaml", "a.b=1", "--stage", "stage1", "c.d=2"])
    assert args.overrides == ["a.b=1", "c.d=2"] and args.stage == "stage1"
    with pytest.raises(SystemExit):
        parse_arguments(["select", "x.yaml", "--stage", "stage1", "stray"])


def test_shipped_recipes_are_listed_run_by_name_and_copied_without_overwriting(tmp_path, monkeypatch, capsys):
    """#24 item 10: after a plain `pip install`, as `tune ls` / `tune cp`."""
    monkeypatch.chdir(tmp_path)
    assert main(["recipes"]) == 0
    listing = capsys.readouterr().out
    assert "miniature " in listing and "miniature-online-rl" in listing and "prefopt run miniature" in listing
    assert main(["validate", "miniature"]) == 0 and "valid (recipe `magicid`)" in capsys.readouterr().out
    assert main(["recipes", "--copy", "miniature-reward-dpo"]) == 0
    copied = tmp_path / "miniature-reward-dpo.yaml"
    assert copied.read_text() == (ROOT / "recipes" / "miniature-reward-dpo.yaml").read_text()
    assert main(["validate", str(copied)]) == 0
    capsys.readouterr()
    assert main(["recipes", "--copy", "miniature-reward-dpo", str(copied)]) == 2
    assert "exists; it is kept" in capsys.readouterr().err
    assert main(["validate", "minature"]) == 2
    assert "`minature` is neither a config file nor a shipped recipe" in capsys.readouterr().err


def test_options_of_a_misspelt_name_suggests_the_closest(capsys):
    assert main(["options", "sdx"]) == 2
    assert "nothing named `sdx` has options. Did you mean `sdxl`?" in capsys.readouterr().err


def test_version_and_run_help_with_an_example_for_every_shipped_recipe(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("prefopt ")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for example in ("prefopt run miniature", "recipes/magicid.yaml", "prefopt run dpo", "prefopt run reward-dpo",
                    "prefopt run online-rl", "run.build_tiny_models=true"):
        assert example in text, example


@pytest.mark.slow
def test_piped_options_are_whole_lines_and_a_closed_pipe_is_no_traceback():
    result = subprocess.run(f"{sys.executable} -m prefopt options trainer | head -3", shell=True, check=False,
                            capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert lines[0] == "| option | type | default | help |" and lines[2].startswith("| `learning_rate` |")
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr

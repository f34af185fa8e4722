"""The documented example plugin package installs and is discovered the way a user's would be."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests import ROOT

EXAMPLE = ROOT / "docs" / "examples" / "prefopt-contrast"


@pytest.mark.slow
def test_example_reward_package_is_discovered_after_pip_install(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    env.pop("PREFOPT_LOAD_PLUGINS", None)  # a user's shell: every installed plugin loads
    result = subprocess.run(
        [sys.executable, "-m", "prefopt", "plugins", "--json"], check=False, capture_output=True, text=True, env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = [r for r in json.loads(result.stdout) if r["name"] == "contrast"]
    assert rows and rows[0]["package"] == "prefopt-contrast" and rows[0]["kind"] == "reward"

    env["PREFOPT_LOAD_PLUGINS"] = ""
    hidden = subprocess.run(
        [sys.executable, "-m", "prefopt", "plugins", "--json"], check=False, capture_output=True, text=True, env=env,
        timeout=120,
    )
    assert "contrast" not in [r["name"] for r in json.loads(hidden.stdout)]


def test_example_reward_scores_contrast():
    import numpy as np

    sys.path.insert(0, str(EXAMPLE))
    try:
        import prefopt_contrast
    finally:
        sys.path.remove(str(EXAMPLE))
    reward = prefopt_contrast.ContrastReward(prefopt_contrast.ContrastConfig())
    flat = np.full((2, 8, 8, 3), 128, np.uint8)
    stripes = np.zeros((2, 8, 8, 3), np.uint8)
    stripes[:, ::2] = 255
    low, high = reward.score([flat, stripes], ["", ""], [])
    assert low.value == 1.0 and high.value == 10.0 and high.raw > low.raw


def test_readme_plugin_snippet_matches_the_example_package():
    readme = (ROOT / "README.md").read_text()
    assert "class ContrastReward" in readme and "register(ContrastReward)" in readme


EXAMPLES = ROOT / "docs" / "examples"
BACKBONE_EXAMPLE = EXAMPLES / "prefopt-auraflow"


@pytest.mark.slow
@pytest.mark.parametrize(("package", "tests"), [("prefopt-auraflow", 3), ("prefopt-pixart", 4), ("prefopt-sana", 5)])
def test_the_backbone_guide_example_packages_pass_their_own_tests(package, tests):
    """docs/writing-a-backbone.md's worked examples (a family like the first-party ones, one without a diffusers
    LoRA loader, one with a non-KL autoencoder): their tests run as a plugin author would run them."""
    folder = EXAMPLES / package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(folder), str(folder)],
        check=False, capture_output=True, text=True, env=env, timeout=600, cwd=folder,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert re.search(rf"\b{tests} passed", result.stdout), result.stdout[-500:]


def test_the_backbone_guide_shows_the_example_code_as_it_is():
    guide = (ROOT / "docs" / "writing-a-backbone.md").read_text()
    source = (BACKBONE_EXAMPLE / "prefopt_auraflow.py").read_text()
    for line in ('    name = "auraflow"', '    pipeline_class_name = "AuraFlowPipeline"', "    register(AuraFlowBackbone)",
                 "    model_timestep_scale = 1.0"):
        assert line in guide and line in source, line

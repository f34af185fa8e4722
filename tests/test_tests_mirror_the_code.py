"""The tests mirror the code: every non-trivial module has a test file of its name in the matching folder
(``prefopt/trainer.py`` → ``tests/prefopt/test_trainer.py``), or the one file that covers it is named here with why."""

from pathlib import Path

from tests import ROOT

CODE_FOLDERS = ("prefopt", "plugins", "recipes")
NON_TRIVIAL_LINES = 60
FAMILIES = "tests/plugins/backbones/test_backbones.py"  # every first-party family, parametrized over all of them
COVERED_ELSEWHERE = {
    **{f"plugins/backbones/{family}.py": FAMILIES
       for family in ("cogvideox", "flux", "ltx_video", "sd3", "sdxl", "stable_diffusion", "wan")},
    "plugins/miniature/nets.py": "tests/plugins/miniature/test_train_rewards.py",  # saved, loaded, missing
    # The recipes' configs are checked through `prefopt validate` on every shipped recipe, side by side.
    **{f"recipes/{recipe}/config.py": "tests/recipes/common/test_config.py"
       for recipe in ("dpo", "magicid", "reward_dpo", "online_rl")},
    # A recipe's report is what its end-to-end run writes, and that run's test reads it.
    "recipes/dpo/report.py": "tests/recipes/dpo/test_recipe.py",
    "recipes/reward_dpo/report.py": "tests/recipes/reward_dpo/test_recipe.py",
    "recipes/online_rl/report.py": "tests/recipes/online_rl/test_recipe.py",
    "recipes/magicid/evaluation.py": "tests/recipes/magicid/test_recipe.py",
    # The shared LoRA trainer base is what both trainers' tests train through.
    "prefopt/lora_trainer.py": "tests/prefopt/test_trainer.py",
    # The updates are exercised (first-update ratio, KL, each algorithm) by the online trainer's tests.
    "prefopt/rl_updates.py": "tests/prefopt/test_online_rl.py",
}


def _modules() -> list[Path]:
    found = []
    for folder in CODE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            if path.stem not in ("__init__", "__main__") and len(lines) > NON_TRIVIAL_LINES:
                found.append(path.relative_to(ROOT))
    return found


def test_every_non_trivial_module_has_its_test_file():
    missing = []
    for module in _modules():
        expected = Path("tests") / module.parent / f"test_{module.stem}.py"
        covering = COVERED_ELSEWHERE.get(module.as_posix(), expected.as_posix())
        if not (ROOT / covering).is_file():
            missing.append(f"{module} → {covering}")
    assert missing == [], "modules without a test file of their name:\n" + "\n".join(missing)
    assert len(_modules()) > 50  # the walk found the code


def test_nothing_is_listed_as_covered_elsewhere_that_has_a_test_file_of_its_own():
    for module in COVERED_ELSEWHERE:
        own = ROOT / "tests" / Path(module).parent / f"test_{Path(module).stem}.py"
        assert not own.is_file(), f"{module} has {own.relative_to(ROOT)}: drop it from COVERED_ELSEWHERE"
        assert (ROOT / module).is_file(), f"{module} no longer exists"

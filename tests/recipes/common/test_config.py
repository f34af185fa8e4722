"""`prefopt validate` catches what the config alone decides: one sentence naming the key, exit 2."""

import pytest

from prefopt.cli import main
from tests import ROOT

QUICKSTART = "recipes/quickstart.yaml"


@pytest.mark.parametrize(("override", "message"), [
    ("video.num_frames=0", "`num_frames` must be at least 1, got 0"),
    ("video.num_frames=-3", "`num_frames` must be at least 1, got -3"),
    ("video.height=0", "`height` must be at least 1, got 0"),
    ("video.batch_size=0", "`batch_size` must be at least 1, got 0"),
    ("references.photos=[]", "`references.photos` is empty"),
    ("repository.lora_videos=0", "`lora_videos` must be at least 1, got 0"),
    ("repository.regenerate_videos=-1", "`regenerate_videos` must be at least 0, got -1"),
    ("prompts.count=0", "`count` must be at least 1, got 0"),
    ("evaluation.videos_per_prompt=0", "`videos_per_prompt` must be at least 1, got 0"),
    ("stage1.selectors.0.options.reward=identiy", "`selectors.0.options.reward` names `identiy`"),
    ("stage1.selectors.0.options.winner_sources=[statik]", "`selectors.0.options.winner_sources` names `statik`"),
    ("stage2.selectors.0.options.rewards=[identity,motion]", "`selectors.0.options.rewards` names `motion`"),
    ("stage2.plot_y=motion", "`plot_y` must name a reward (identity, dynamic, semantic), got `motion`"),
    ("run.name=", "`name` must be a plain folder name"),
    ("run.name=../../x", "`name` must be a plain folder name"),
    ("run.name=.hidden", "`name` must be a plain folder name"),
    ("run.output_dir=", "`output_dir` must not be empty"),
    # numbers no option means anything with, refused before any work (not after a model loads)
    ("dpo_stage1.learning_rate=nan", "`dpo_stage1.learning_rate` must be a finite number, got `nan`"),
    ("dpo_stage1.learning_rate=-1e-5", "`learning_rate` must be greater than 0, got -1e-05"),
    ("dpo_stage1.beta=.inf", "`dpo_stage1.beta` must be a finite number, got `inf`"),
    ("dpo_stage2.max_grad_norm=-1", "`max_grad_norm` must be at least 0, got -1.0"),
    ("identity_lora.lora_dropout=1", "`lora_dropout` must be less than 1, got 1.0"),
    ("rewards.semantic.options.raw_max=-100", "`raw_max` (-100.0) must exceed `raw_min` (-60.0)"),
    ("rewards.dynamic.options.sample_fps=0", "`sample_fps` must be greater than 0, got 0.0"),
    ("rewards.identity.options.frames=0", "`frames` must be at least 1, got 0"),
    # a malformed value on the command line is the same clean error as inside the file
    ("dpo_stage1.learning_rate=[1,", "override `dpo_stage1.learning_rate`: `[1,` is not a valid YAML value"),
    ("run.name={a: 1", "override `run.name`: `{a: 1` is not a valid YAML value"),
    # a chain starts with a selector that makes pairs (each selector declares its roles)
    ("stage1.selectors=[{name: topk, options: {k: 3, reward: identity}}]",
     "`stage1`: `selectors.0`: selector `topk` only filters pairs, so it cannot start the chain"),
    # keys the recipe decides itself are refused, not silently overwritten (and rerunning stages through the hash)
    ("dpo_stage1.height=64", "`dpo_stage1.height` cannot be set in this recipe (`video.*` sets them)"),
    ("dpo_stage2.init_adapter=x", "`dpo_stage2.init_adapter` cannot be set in this recipe"),
])
def test_validate_names_the_key_and_exits_2(override, message, capsys):
    assert main(["validate", QUICKSTART, override]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("prefopt: error: ")


def test_the_shipped_recipes_validate(capsys):
    assert main(["validate", QUICKSTART]) == 0
    photo = "package://prefopt_plugins/miniature/references/avatar-448-0.png"
    assert main(["validate", "recipes/magicid.yaml", f"references.photos=[{photo}]"]) == 0  # weights: the run's


@pytest.mark.parametrize(("recipe", "override", "message"), [
    ("recipes/dpo.yaml", "data.path=", "`data.path` is empty: give a preference data file, a folder or a dataset id"),
    ("recipes/dpo.yaml", "data.path=nothere.parquet", "preference data `nothere.parquet` does not exist."),
    ("recipes/dpo.yaml", "data.path=org/pairs", "is not a file or folder here; to read the Hugging Face dataset"),
    ("recipes/magicid.yaml", "references.photos=[me.jpg]", "reference photo `me.jpg` does not exist."),
    ("recipes/miniature-online-rl.yaml", "prompts=[]", "no prompts: set `prompts`, `prompts_file`"),
])
def test_validate_refuses_inputs_the_config_names_that_are_not_there(recipe, override, message, capsys, tmp_path,
                                                                     monkeypatch):
    """#24 item 2: an empty or missing data path, photo or prompts source stops `validate`, not the run later."""
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(ROOT / recipe), override]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("prefopt: error: recipe "), err


def test_the_paper_recipe_tolerates_only_the_dynamic_reward_in_stage_1():
    """Sec. 3.4 / Fig. 3: stage 1 holds motion within a tolerance; semantic scores of different prompts are not
    compared."""
    from prefopt.runner import load_config

    _, config = load_config("recipes/magicid.yaml", ["references.photos=[me.jpg]"])
    threshold = config.stage1.selectors[0].options
    assert threshold.reward == "identity" and threshold.tolerance_rewards == ["dynamic"]


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.height=32", "`trainer.height` cannot be set in this recipe (`sampling.*` sets the media size)"),
    ("selection.selectors=[{name: topk, options: {k: 3, reward: action}}]",
     "selector `topk` only filters pairs, so it cannot start the chain"),
    ("run.seed=-1.5", "`run.seed` must be an integer"),
])
def test_the_reward_dpo_loop_refuses_keys_it_would_ignore_and_chains_that_cannot_start(override, message, capsys):
    assert main(["validate", "recipes/miniature-reward-dpo.yaml", override]) == 2
    assert message in capsys.readouterr().err


def test_the_dpo_recipe_has_no_seed_it_would_ignore(capsys):
    assert main(["validate", "recipes/dpo.yaml", "run.seed=3"]) == 2
    assert "unknown key `run.seed`" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["recipes/online-rl.yaml", "recipes/miniature-online-rl.yaml"])
@pytest.mark.parametrize("algorithm", ["grpo", "nft", "awm"])
def test_the_online_rl_recipes_validate_with_every_algorithm_their_header_names(recipe, algorithm, capsys):
    """Neither YAML sets an option of one algorithm only, so `trainer.algorithm=nft` (their headers' command)
    switches without a key in the way."""
    assert main(["validate", recipe, f"trainer.algorithm={algorithm}"]) == 0


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.seed=3", "`trainer.seed` cannot be set in this recipe (`run.seed` seeds the training"),
    ("reward_weights.aesthetic=2", "`reward_weights.aesthetic` names no reward under `rewards` (action)"),
    ("judges.action={name: miniature-action}", "`judges.action` is also a trained reward"),
    ("trainer.sde_window_range=[0.5,0.2]", "`sde_window_range` takes effect only with `sde_window` above 0"),
    ("trainer.nft_beta=0.5", "`nft_beta` takes effect only with `algorithm: nft`"),
])
def test_the_online_rl_recipe_refuses_what_would_do_nothing(override, message, capsys):
    assert main(["validate", "recipes/miniature-online-rl.yaml", override]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("recipe", "override", "message"), [
    ("recipes/online-rl.yaml", "trainer.num_frames=9",
     "`trainer.num_frames`: backbone `sd3` makes images: `num_frames` must be 1, got 9."),
    ("recipes/magicid.yaml", "video.num_frames=60",
     "`video.num_frames`: backbone `hunyuan-video` takes 4·k + 1 frames (e.g. 17), got 60."),
])
def test_validate_refuses_a_frame_count_the_backbone_cannot_take(recipe, override, message, capsys):
    """#24 item 2: from the backbone class's frame rules, without loading the model (the miniature world's
    pixel-space model, saved without a VAE, takes any count: the miniature recipes validate)."""
    photo = "references.photos=[package://prefopt_plugins/miniature/references/avatar-448-0.png]"
    assert main(["validate", recipe, override, photo] if "magicid" in recipe else ["validate", recipe, override]) == 2
    assert message in capsys.readouterr().err


def test_validate_refuses_a_model_folder_of_another_family(capsys, tmp_path):
    """#24 item 2: read from the folder's model_index.json, before anything loads."""
    (tmp_path / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    assert main(["validate", "recipes/online-rl.yaml", f"backbone.options.pretrained={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert (f"`{tmp_path}` holds a FluxPipeline, the model of backbone `flux`, but backbone `sd3` loads a "
            "StableDiffusion3Pipeline: set `backbone.name=flux`") in err


@pytest.mark.parametrize("index", [None, "{not json", '["a list"]'])
def test_validate_passes_a_model_folder_without_a_readable_index_to_the_weights_check(index, tmp_path, capsys):
    """The frame and family checks read model_index.json only when it is there and readable; what is missing is the
    run's weights check to say (one sentence), never a traceback from validate."""
    if index is not None:
        (tmp_path / "model_index.json").write_text(index)
    photo = "references.photos=[package://prefopt_plugins/miniature/references/avatar-448-0.png]"
    assert main(["validate", "recipes/magicid.yaml", photo, f"backbone.options.pretrained={tmp_path}"]) == 0

"""DiffusionDPOTrainer on tiny random backbones: it optimises, saves, resumes and stops on NaN."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from prefopt.data import PreferenceExample, SFTExample, read_pairs, save_tensors
from prefopt.media import write_media
from prefopt.tiny_models import tiny_backbones

TINY_MEDIA_SIZES = tiny_backbones()
from prefopt.trainer import DiffusionDPOTrainer, TrainerConfig, TrainingDivergedError

SIZE = {"num_frames": 5, "height": 32, "width": 32}


def _config(**overrides):
    base = dict(max_steps=3, learning_rate=1e-3, weight_decay=0.0, lora_rank=4, lora_alpha=4, checkpoint_every=100,
                report_to="none", **SIZE)
    dpo = {"beta": 100.0} if overrides.get("mode", "dpo") == "dpo" else {}  # β is refused outside DPO
    return TrainerConfig(**{**base, **dpo, **overrides})


def _videos(tmp_path, n, seed=0):
    rng = np.random.default_rng(seed)
    return [str(write_media(tmp_path / f"v{i}.mp4", rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)))
            for i in range(n)]


def _pairs(paths):
    prompts = ["a man walks", "a woman waves"]
    return [PreferenceExample(prompts[i % 2], paths[i], paths[i + 1]) for i in range(0, len(paths) - 1, 2)]


def test_dpo_changes_every_lora_parameter_and_saves_a_loadable_lora(tmp_path, make_backbone):
    backbone = make_backbone("hunyuan-video")
    trainer = DiffusionDPOTrainer(backbone, _config(), tmp_path / "run")
    lora_file = trainer.train(_pairs(_videos(tmp_path, 4)))
    trained = load_file(str(lora_file))
    assert trained and all(k.startswith("transformer.") for k in trained)
    # every LoRA matrix moved away from its initialisation (B starts at zero; A is random but was trained)
    lora_b = {k: v for k, v in trained.items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())
    checkpoint = load_file(str(tmp_path / "run" / "checkpoints" / "step-000003" / "lora-dpo.safetensors"))
    assert len(checkpoint) == len(trained)  # resumable peft-format copy of the same adapter
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert {"loss", "implicit_accuracy", "reward_margin", "model_err_winner", "ref_err_loser", "lr"} <= set(metrics[0])
    assert metrics[0]["loss"] == pytest.approx(np.log(2), abs=1e-6)  # step 1: policy == reference


def test_every_lora_parameter_changes(tmp_path, make_backbone):
    backbone = make_backbone("hunyuan-video")
    trainer = DiffusionDPOTrainer(backbone, _config(max_steps=2), tmp_path / "run")
    from prefopt.lora import POLICY_ADAPTER, adapter_parameters

    original_add = trainer._optimizer
    snapshot = {}

    def capture(denoiser):
        snapshot.update({n: p.detach().clone() for n, p in denoiser.named_parameters() if "lora" in n})
        return original_add(denoiser)

    trainer._optimizer = capture
    trainer.train(_pairs(_videos(tmp_path, 4)))
    after = {n: p.detach() for n, p in backbone.denoiser.named_parameters() if "lora" in n}
    assert snapshot and set(snapshot) == set(after)
    unchanged = [n for n in snapshot if torch.equal(snapshot[n], after[n])]
    assert not unchanged, unchanged
    assert all(p.requires_grad for p in adapter_parameters(backbone.denoiser, POLICY_ADAPTER))
    assert not any(p.requires_grad for n, p in backbone.denoiser.named_parameters() if "lora" not in n)


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path, make_backbone):
    examples = _pairs(_videos(tmp_path, 6))
    straight = DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(max_steps=6), tmp_path / "a")
    straight_lora = load_file(str(straight.train(examples)))

    first = DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(max_steps=3, checkpoint_every=3), tmp_path / "b")
    first.train(examples)
    # A new process: fresh backbone and trainer, same run directory, a longer schedule.
    second = DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(max_steps=6, checkpoint_every=3), tmp_path / "b")
    resumed_lora = load_file(str(second.train(examples)))
    assert second.step == 6
    for key, value in straight_lora.items():
        torch.testing.assert_close(resumed_lora[key], value, rtol=0, atol=0)
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_a_torn_metrics_line_and_an_attempt_before_the_first_checkpoint_leave_each_step_logged_once(
        tmp_path, make_backbone):
    """A kill tears the metrics log's last line, or comes before the first checkpoint: the run resumes (no
    JSONDecodeError), and the log holds steps 1…N once, not an earlier attempt's steps too."""
    examples = _pairs(_videos(tmp_path, 4))
    run = tmp_path / "run"
    DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(max_steps=2, checkpoint_every=2), run).train(examples)
    with open(run / "metrics.jsonl", "a") as log:
        log.write('{"step": 3, "loss": 0.69')  # a step logged past the checkpoint, torn mid-line by a kill
    DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(max_steps=4, checkpoint_every=2), run).train(examples)
    assert [row["step"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3, 4]

    early = tmp_path / "early"  # an attempt killed before its first checkpoint left steps 1–2 in the log
    early.mkdir()
    (early / "metrics.jsonl").write_text('{"step": 1, "loss": 0.7}\n{"step": 2, "loss": 0.6}\n')
    DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(max_steps=3), early).train(examples)
    assert [row["step"] for row in map(json.loads, (early / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3]


def test_nan_loss_stops_with_a_clear_message_and_keeps_last_checkpoint(tmp_path, make_backbone):
    videos = _videos(tmp_path, 2)
    good = [PreferenceExample("a man walks", videos[0], videos[1])]
    run = tmp_path / "run"
    DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(max_steps=2, checkpoint_every=1), run).train(good)
    bad = [PreferenceExample("a man walks", videos[0], videos[1], weight=float("nan"))]
    trainer = DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(max_steps=4, checkpoint_every=1), run)
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at step 3; the last good checkpoint is .*step-000002"):
        trainer.train(bad)
    assert (run / "checkpoints" / "step-000002" / "lora-dpo.safetensors").is_file()


def _pattern_latents(tmp_path, backbone, sign, n, seed):
    shape = (4, 2, 4, 4)  # [C, F, H, W] of the tiny HunyuanVideo latent space
    gen = torch.Generator().manual_seed(seed)
    paths = []
    base = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    for i in range(n):
        latent = sign * base.expand(shape) + 0.1 * torch.randn(shape, generator=gen)
        path = tmp_path / f"{'w' if sign > 0 else 'l'}{i}.safetensors"
        save_tensors(path, {"latents": latent})
        paths.append(str(path))
    return paths


@pytest.mark.slow
def test_synthetic_preferences_are_learned(tmp_path, make_backbone):
    """Winners follow one pattern and losers its negation; DPO must learn to prefer the winners."""
    backbone = make_backbone("hunyuan-video")
    winners = _pattern_latents(tmp_path, backbone, +1.0, 8, 0)
    losers = _pattern_latents(tmp_path, backbone, -1.0, 8, 1)
    examples = [PreferenceExample("a person", w, l) for w, l in zip(winners, losers)]
    config = _config(max_steps=60, learning_rate=3e-3, beta=500.0, batch_size=4, log_every=1)
    DiffusionDPOTrainer(backbone, config, tmp_path / "run").train(examples)
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    late = metrics[-10:]
    assert np.mean([m["implicit_accuracy"] for m in late]) > 0.9
    assert np.mean([m["model_err_winner"] - m["ref_err_winner"] for m in late]) < 0
    assert np.mean([m["model_err_loser"] - m["ref_err_loser"] for m in late]) > 0
    assert np.mean([m["loss"] for m in late]) < np.log(2) - 0.1


def test_sft_mode_lowers_the_denoising_error(tmp_path, make_backbone):
    backbone = make_backbone("hunyuan-video")
    videos = _videos(tmp_path, 2)
    examples = [SFTExample("a photo of a person", v) for v in videos]
    config = _config(mode="sft", max_steps=40, learning_rate=3e-3, batch_size=2)
    DiffusionDPOTrainer(backbone, config, tmp_path / "run").train(examples)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_mode_and_example_type_must_match(tmp_path, make_backbone):
    trainer = DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(mode="sft"), tmp_path)
    with pytest.raises(Exception, match="mode `sft` trains on SFTExample"):
        trainer.train([PreferenceExample("p", "a.mp4", "b.mp4")])


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(TINY_MEDIA_SIZES))
def test_every_backbone_trains_from_a_pairs_file_and_loads_into_the_pipeline(tmp_path, make_backbone, kind):
    frames, height, width = TINY_MEDIA_SIZES[kind]
    rng = np.random.default_rng(0)
    suffix = ".png" if frames == 1 else ".mp4"
    paths = [write_media(tmp_path / f"m{i}{suffix}", rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8))
             for i in range(4)]
    pairs_file = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "a cat", "winner": paths[0].name, "loser": paths[1].name, "weight": 2.0},
            {"prompt": "a dog", "winner": paths[2].name, "loser": paths[3].name}]
    pairs_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = read_pairs(pairs_file)
    assert examples[0].weight == 2.0 and examples[1].weight == 1.0
    backbone = make_backbone(kind)
    config = _config(num_frames=frames, height=height, width=width, max_steps=2)
    lora_file = DiffusionDPOTrainer(backbone, config, tmp_path / "run").train(examples)
    fresh = make_backbone(kind)
    before = _denoiser_output(fresh)
    fresh.pipe.load_lora_weights(str(lora_file.parent))
    after = _denoiser_output(fresh)
    assert not torch.allclose(before, after), "the loaded LoRA changed nothing"


def _denoiser_inputs(backbone):
    """(latents, noise, timesteps, conditioning) for one sample, the same for every call."""
    frames, height, width = TINY_MEDIA_SIZES[backbone.name]
    gen = torch.Generator().manual_seed(0)
    latents = backbone.encode_media(torch.rand(1, 3, frames, height, width, generator=gen) * 2 - 1)
    conditioning = backbone.encode_prompts(["a cat"])
    timesteps = backbone.sample_timesteps(1, gen, latent_shape=tuple(latents.shape))
    return latents, torch.randn(latents.shape, generator=gen), timesteps, conditioning


def _denoiser_output(backbone):
    with torch.no_grad():
        return backbone.forward_train(*_denoiser_inputs(backbone)).prediction


@pytest.mark.slow
@pytest.mark.parametrize("variant", [
    {"gradient_checkpointing": True},
    {"gradient_checkpointing": True, "checkpoint_every_n_blocks": 2},
    {"gradient_checkpointing": True, "checkpoint_save_attention": True, "dpo_schedule": "split"},
    {"dpo_schedule": "split"},
    {"offload_activations": True},
    {"gradient_checkpointing": True, "checkpoint_save_attention": True, "offload_activations": True},
    {"attention_backend": "_native_math"},
], ids=["checkpoint-all", "checkpoint-every-2nd", "checkpoint-keep-attention-split", "split-schedule", "offload",
        "checkpoint-keep-attention-offload", "math-attention"])
def test_memory_options_give_the_same_training(tmp_path, make_backbone, variant):
    examples = _pairs(_videos(tmp_path, 4))
    plain = DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(), tmp_path / "a").train(examples)
    changed = DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(**variant), tmp_path / "b").train(examples)
    _assert_same_training(plain, changed)


def _assert_same_training(lora_a, lora_b):
    """The same losses step by step, and the same LoRA to a tenth of one Adam step. Adam moves every element
    by about lr per step whatever its gradient's size, so float rounding on a near-zero gradient element
    shows up at the scale of lr (1e-3); gradients themselves are compared tightly in test_dpo_steps.py."""
    losses = [[json.loads(line)["loss"] for line in (f.parents[1] / "metrics.jsonl").read_text().splitlines()]
              for f in (lora_a, lora_b)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    a, b = load_file(str(lora_a)), load_file(str(lora_b))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.slow
def test_compiled_blocks_train_like_eager(tmp_path, make_backbone):
    """torch.compile (inductor; C++ on the CPU, about a minute) of every block, with checkpointing, the
    mask-free text stream and the reference's adapter toggling: the same LoRA as eager training."""
    examples = _pairs(_videos(tmp_path, 4))
    eager = DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(gradient_checkpointing=True),
                                tmp_path / "eager").train(examples)
    backbone = make_backbone("hunyuan-video")
    compiled = DiffusionDPOTrainer(backbone, _config(gradient_checkpointing=True, compile_blocks=True),
                                   tmp_path / "compiled").train(examples)
    blocks = [*backbone.denoiser.transformer_blocks, *backbone.denoiser.single_transformer_blocks]
    assert all(block._compiled_call_impl is not None for block in blocks)
    _assert_same_training(eager, compiled)


@pytest.mark.slow
def test_fp8_emulated_trains_and_saves_a_plain_lora(tmp_path, make_backbone):
    pytest.importorskip("torchao", reason="torchao (prefopt[fp8]) is not installed")
    backbone = make_backbone("hunyuan-video")
    lora_file = DiffusionDPOTrainer(backbone, _config(max_steps=2, fp8="emulated"), tmp_path / "run").train(
        _pairs(_videos(tmp_path, 4)))
    assert type(backbone.denoiser.transformer_blocks[0].ff.net[2]).__name__ == "Float8Linear"
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["loss"] == pytest.approx(np.log(2), abs=1e-6)  # B = 0: policy equals reference in FP8 too
    fresh = make_backbone("hunyuan-video")  # no FP8: the saved LoRA is an ordinary one
    before = _denoiser_output(fresh)
    fresh.pipe.load_lora_weights(str(lora_file.parent))
    assert not torch.allclose(before, _denoiser_output(fresh))


def test_block_checkpointing_selects_every_nth_block(make_backbone):
    from prefopt.speed_levers import enable_block_checkpointing, transformer_blocks

    backbone = make_backbone("hunyuan-video")
    blocks = transformer_blocks(backbone.denoiser)
    assert len(blocks) == 2  # tiny model: one double-stream and one single-stream block
    assert enable_block_checkpointing(backbone.denoiser, every=2) == 1
    assert enable_block_checkpointing(backbone.denoiser, every=1) == 2


@pytest.mark.slow
def test_gradient_accumulation_and_tensorboard(tmp_path, make_backbone):
    config = _config(max_steps=2, gradient_accumulation_steps=2, report_to="tensorboard", tracker_project="faces")
    DiffusionDPOTrainer(make_backbone("hunyuan-video"), config, tmp_path / "run").train(_pairs(_videos(tmp_path, 4)))
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    # tensorboard names runs by folder: <project>/<run>/<stage folder> (here the run folder is the tmp dir)
    events = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert events and events[0].parent == tmp_path / "run" / "faces" / tmp_path.name / "run"


def test_trackers_get_the_project_and_the_run_name_where_each_takes_them():
    from prefopt.lora_trainer import tracker_names

    assert tracker_names("wandb", "faces", "magicid/stage2-ab12") == ("faces", {"wandb": {"name": "magicid/stage2-ab12"}})
    assert tracker_names("mlflow", "faces", "r/s") == ("faces", {"mlflow": {"run_name": "r/s"}})
    assert tracker_names("clearml", "faces", "r/s") == ("faces", {"clearml": {"task_name": "r/s"}})
    assert tracker_names("tensorboard", "faces", "r/s") == ("faces/r/s", {})
    assert tracker_names("comet_ml", "faces", "r/s") == ("faces", {})


def test_naming_a_tracker_run_changes_no_stage_hash():
    """Names and places are outside the stage hashes: a run continues whatever its tracker run is called."""
    from prefopt.stages import config_hash

    assert config_hash(_config()) == config_hash(_config(tracker_project="faces", tracker_run_name="try 2"))
    assert config_hash(_config()) != config_hash(_config(max_steps=4))


@pytest.mark.slow
def test_reference_sync_mixes_the_policy_into_the_reference_adapter(tmp_path, make_backbone):
    from prefopt.lora import POLICY_ADAPTER, REFERENCE_ADAPTER, adapter_parameters

    backbone = make_backbone("hunyuan-video")
    config = _config(max_steps=3, sync_ref_model=True, ref_model_sync_steps=1, ref_model_mixup_alpha=0.5)
    DiffusionDPOTrainer(backbone, config, tmp_path / "run").train(_pairs(_videos(tmp_path, 4)))
    policy = adapter_parameters(backbone.denoiser, POLICY_ADAPTER)
    reference = adapter_parameters(backbone.denoiser, REFERENCE_ADAPTER)
    b_pairs = [(p, r) for (n, p), r in zip(
        [(n, p) for n, p in backbone.denoiser.named_parameters() if f".{POLICY_ADAPTER}." in n], reference)
        if "lora_B" in n]
    # The reference B matrices started at zero and moved half-way towards the policy after each step.
    assert all(r.abs().sum() > 0 for _, r in b_pairs)
    assert any(not torch.equal(p, r) for p, r in zip(policy, reference))
    assert not any(r.requires_grad for r in reference)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_reference_with_an_initial_lora_is_the_sampling_model(tmp_path, make_backbone, dtype):
    """`init_lora` stays a frozen adapter: the reference (trained adapter off) computes exactly what the pipeline
    that sampled with that LoRA computes, in bf16 too, where fusing it into the weights would round a gentle update
    away; and the zero-initialised trained adapter starts the policy there."""
    from prefopt.lora import INIT_ADAPTER, adapter_parameters, reference_mode

    videos = _videos(tmp_path, 4)
    identity = DiffusionDPOTrainer(
        make_backbone("hunyuan-video"), _config(mode="sft", max_steps=3), tmp_path / "identity"
    ).train([SFTExample("a person", v) for v in videos])
    sampler = make_backbone("hunyuan-video", dtype=dtype)
    sampler.use_loras([identity])  # as a recipe samples with it
    expected = _denoiser_output(sampler)
    backbone = make_backbone("hunyuan-video", dtype=dtype)
    trainer = DiffusionDPOTrainer(backbone, _config(init_lora=str(identity)), tmp_path / "dpo")
    denoiser = trainer._prepare_model()
    with reference_mode(denoiser):
        assert torch.equal(_denoiser_output(backbone), expected)
    assert torch.equal(_denoiser_output(backbone), expected)  # policy = reference at the start
    assert not any(p.requires_grad for p in adapter_parameters(denoiser, INIT_ADAPTER))
    assert not torch.equal(_denoiser_output(make_backbone("hunyuan-video", dtype=dtype)), expected)


def test_missing_backbone_weights_name_the_model_and_the_fix(tmp_path):
    from prefopt.config import parse
    from prefopt.errors import MissingWeightsError
    from prefopt.plugins import get_registry

    entry = get_registry().get("backbones", "wan")
    with pytest.raises(MissingWeightsError, match=r"Wan 2\.1 weights `.*nowhere` are neither a local directory with model_index\.json"):
        entry.cls(parse(entry.config_class, {"pretrained": str(tmp_path / "nowhere")}))


def test_unknown_attention_backend_lists_the_choices(tmp_path, make_backbone):
    trainer = DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(attention_backend="fast"), tmp_path)
    with pytest.raises(Exception, match=r"`attention_backend` must be one of .*native.*got `fast`"):
        trainer.train(_pairs(_videos(tmp_path, 2)))


def test_report_to_accepts_accelerate_trackers_and_names_a_missing_package(tmp_path, make_backbone, monkeypatch):
    import accelerate.utils

    from prefopt.errors import PrefoptError

    with pytest.raises(ValueError, match=r"`report_to` must be one of 'none', 'tensorboard', 'wandb', 'mlflow'.*, "
                                         r"got `'wandbb'`\. Did you mean `'wandb'`\?"):  # as every other choice
        _config(report_to="wandbb")
    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    with pytest.raises(PrefoptError, match=r"`report_to: wandb` needs the `wandb` package: `pip install wandb`"):
        DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(report_to="wandb"), tmp_path / "run")


def test_a_corrupt_latent_file_is_named(tmp_path, make_backbone):
    from prefopt.errors import PrefoptError

    backbone = make_backbone("hunyuan-video")
    winners = _pattern_latents(tmp_path, backbone, 1, 1, seed=0)
    losers = _pattern_latents(tmp_path, backbone, -1, 1, seed=1)
    Path(losers[0]).write_bytes(Path(losers[0]).read_bytes()[:30])
    trainer = DiffusionDPOTrainer(backbone, _config(max_steps=1), tmp_path / "run")
    with pytest.raises(PrefoptError, match=rf"latents of `{losers[0]}` `.*` cannot be read .*truncated or corrupt"):
        trainer.train([PreferenceExample("a man walks", winners[0], losers[0])])


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(TINY_MEDIA_SIZES))
def test_a_lora_with_alpha_unlike_rank_loads_back_at_its_trained_strength(tmp_path, make_backbone, kind):
    """r = 4, α = 1 trains at scale 0.25; the saved file must carry α, or diffusers rebuilds it at scale 1."""
    frames, height, width = TINY_MEDIA_SIZES[kind]
    rng = np.random.default_rng(0)
    suffix = ".png" if frames == 1 else ".mp4"
    paths = [str(write_media(tmp_path / f"m{i}{suffix}", rng.integers(0, 255, (frames, height, width, 3),
                                                                      dtype=np.uint8)))
             for i in range(4)]
    backbone = make_backbone(kind)
    config = _config(num_frames=frames, height=height, width=width, max_steps=3, lora_rank=4, lora_alpha=1, learning_rate=1e-2)
    lora_file = DiffusionDPOTrainer(backbone, config, tmp_path / "run").train(_pairs(paths))
    fresh = make_backbone(kind)
    inputs = _denoiser_inputs(fresh)  # the trained backbone's encoders were unloaded after encoding

    def output(model_backbone):
        with torch.no_grad():
            return model_backbone.forward_train(*inputs).prediction

    backbone.denoiser.eval()
    trained, base = output(backbone), output(fresh)  # in memory, the adapter runs at α/r
    fresh.pipe.load_lora_weights(str(lora_file.parent))
    assert (trained - base).abs().max() > 1e-4  # the LoRA does something measurable
    torch.testing.assert_close(output(fresh), trained, rtol=1e-4, atol=1e-5)
    from prefopt.lora import attach_frozen_lora

    initial = make_backbone(kind)  # as the next DPO stage's reference (`init_lora`) sees it
    attach_frozen_lora(initial.denoiser, lora_file, prefix=initial.denoiser_attribute)
    torch.testing.assert_close(output(initial), trained, rtol=1e-4, atol=1e-5)


def test_the_split_schedule_with_lora_dropout_is_refused_as_it_would_not_give_the_joint_gradient():
    """Its no-grad pass and its backward pass draw different dropout masks (#25 item 10)."""
    with pytest.raises(ValueError, match="`dpo_schedule: split` gives the joint step's gradient only without LoRA "
                                         "dropout; set `lora_dropout: 0` or `dpo_schedule: joint`"):
        TrainerConfig(dpo_schedule="split", lora_dropout=0.1)
    assert TrainerConfig(dpo_schedule="joint", lora_dropout=0.1).lora_dropout == 0.1


@pytest.mark.parametrize(("kind", "text_stream"), [
    ("sd3", {"attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"}),  # the tiny model's one block has no to_add_out
    ("flux", {"attn.add_q_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
              "ff_context.net.2"}),
    ("hunyuan-video", set()),  # the paper states none: the usual diffusers DreamBooth-LoRA targets (docs/magicid.md)
])
def test_default_lora_targets_are_the_families_reference_trainers(tmp_path, make_backbone, kind, text_stream):
    """diffusers' SD3 and FLUX LoRA trainers also adapt the text stream (FLUX: and the MLPs), #25 item 9."""
    trainer = DiffusionDPOTrainer(make_backbone(kind), TrainerConfig(mode="sft", lora_rank=2), tmp_path)
    denoiser = trainer._prepare_model()
    adapted = {name for name, module in denoiser.named_modules() if hasattr(module, "lora_A")}
    for target in text_stream | {"attn.to_q", "attn.to_k", "attn.to_v"}:
        assert any(name.endswith(target) for name in adapted), (target, sorted(adapted))
    if not text_stream:
        assert not any("add_" in name or ".ff" in name for name in adapted), sorted(adapted)


def test_sync_ref_model_without_trl_is_refused_naming_the_extra(monkeypatch, make_backbone, tmp_path):
    import importlib.util

    from prefopt.errors import PrefoptError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    config = TrainerConfig(sync_ref_model=True)  # a finished TR-DPO run's config still reads (sample, push)
    with pytest.raises(PrefoptError, match=r"trl is not installed: `pip install 'prefopt\[trl\]'`"):
        DiffusionDPOTrainer(make_backbone("hunyuan-video"), config, tmp_path)


def test_an_initial_lora_trained_with_dropout_is_deterministic_under_the_trained_one(tmp_path, make_backbone):
    """Its file's metadata carries its training dropout; frozen under the DPO adapter it must not drop anything,
    or the reference would not be the model that sampled (a training-mode forward is what the trainer runs)."""
    from prefopt.lora import reference_mode

    videos = _videos(tmp_path, 4)
    identity = DiffusionDPOTrainer(
        make_backbone("hunyuan-video"), _config(mode="sft", max_steps=3, lora_dropout=0.5), tmp_path / "identity"
    ).train([SFTExample("a person", v) for v in videos])
    sampler = make_backbone("hunyuan-video")
    sampler.use_loras([identity])
    expected = _denoiser_output(sampler)
    backbone = make_backbone("hunyuan-video")
    denoiser = DiffusionDPOTrainer(backbone, _config(init_lora=str(identity)), tmp_path / "dpo")._prepare_model()
    denoiser.train()
    with reference_mode(denoiser):
        assert torch.equal(_denoiser_output(backbone), expected)


def test_sampling_with_a_lora_trained_with_dropout_drops_nothing(tmp_path, make_backbone):
    """peft creates the adapter's dropout modules in training mode; the sampling model must run without them."""
    videos = _videos(tmp_path, 4)
    lora = DiffusionDPOTrainer(make_backbone("hunyuan-video"), _config(mode="sft", max_steps=2, lora_dropout=0.5),
                               tmp_path / "lora").train([SFTExample("a person", v) for v in videos])
    sampler = make_backbone("hunyuan-video")
    sampler.use_loras([lora])
    assert not any(module.training for module in sampler.denoiser.modules())
    assert torch.equal(_denoiser_output(sampler), _denoiser_output(sampler))

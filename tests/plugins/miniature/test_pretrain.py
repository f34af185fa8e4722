"""Pretraining the miniature video model: resumable, step-exact, and saved as a pipeline prefopt loads."""

import pytest
import torch

from prefopt_plugins.miniature.model import PROMPT_TOKENS, miniature_backbone


def test_pretraining_resumes_and_saves_a_loadable_model(tmp_path):
    """Two short runs of the pretraining script: the second continues the first's steps and loss curve."""
    import json

    from prefopt_plugins.miniature.pretrain import main

    out = tmp_path / "model"
    main(["--out", str(out), "--small", "--max-steps", "3", "--batch", "2", "--threads", "1"])
    first = json.loads((out / "pretraining.json").read_text())
    main(["--out", str(out), "--small", "--max-steps", "5", "--batch", "2", "--threads", "1"])
    second = json.loads((out / "pretraining.json").read_text())
    assert (first["steps"], second["steps"]) == (3, 5)
    straight = tmp_path / "straight"
    main(["--out", str(straight), "--small", "--max-steps", "5", "--batch", "2", "--threads", "1"])
    from safetensors.torch import load_file

    resumed, uninterrupted = (load_file(str(f / "transformer" / "diffusion_pytorch_model.safetensors"))
                              for f in (out, straight))
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)  # resumed exactly
    backbone = miniature_backbone(out)
    assert backbone.pixel_space and sum(p.numel() for p in backbone.denoiser.parameters()) == second["parameters"]
    main(["--out", str(out), "--small", "--max-steps", "6", "--batch", "2", "--threads", "1", "--max-sequence-length", "24"])
    record = json.loads((out / "pretraining.json").read_text())
    assert record["prompt_phases"] == [{"from_step": 0, "max_sequence_length": PROMPT_TOKENS},
                                       {"from_step": 5, "max_sequence_length": 24}]
    assert [("--max-steps 5" in c, "--max-sequence-length 24" in c) for c in record["reproduce"]] == [
        (True, False), (False, True)]


def test_a_checkpoint_from_before_prompt_phases_counts_as_16_tokens(tmp_path):
    import json

    from prefopt_plugins.miniature.pretrain import main

    out = tmp_path / "model"
    main(["--out", str(out), "--small", "--max-steps", "2", "--batch", "2", "--threads", "1"])
    state_file = next((tmp_path / "model.work").glob("step-*")) / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["prompt_phases"]
    state_file.write_text(json.dumps(state))
    main(["--out", str(out), "--small", "--max-steps", "3", "--batch", "2", "--threads", "1"])
    phases = json.loads((out / "pretraining.json").read_text())["prompt_phases"]
    assert phases == [{"from_step": 0, "max_sequence_length": 16}, {"from_step": 2, "max_sequence_length": PROMPT_TOKENS}]


def test_pretraining_can_start_from_a_saved_model_with_its_own_or_word_tokens(tmp_path):
    """`--init-from`: the saved model's transformer and encoders (all of them with the same tokens; a new Llama encoder
    for word tokens, whose CLIP encoder and transformer still come from the saved model)."""
    import json

    from safetensors.torch import load_file

    from prefopt_plugins.miniature.pretrain import main

    small = ["--small", "--batch", "2", "--threads", "1"]
    base, same, words = tmp_path / "base", tmp_path / "same", tmp_path / "words"
    main(["--out", str(base), "--max-steps", "2", *small])
    main(["--out", str(same), "--max-steps", "0", "--seed", "1", "--init-from", str(base), *small])
    main(["--out", str(words), "--max-steps", "0", "--seed", "1", "--init-from", str(base), "--text-tokens", "word",
          *small])
    redrawn = tmp_path / "redrawn"
    main(["--out", str(redrawn), "--max-steps", "0", "--seed", "1", "--init-from", str(base), "--new-text-encoder",
          *small])

    def weights(folder, part):
        return load_file(str(next((folder / part).glob("*.safetensors"))))

    def equal(a, b, part):
        first, second = weights(a, part), weights(b, part)
        return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)

    assert all(equal(base, same, part) for part in ("transformer", "text_encoder", "text_encoder_2"))
    assert equal(base, words, "transformer") and equal(base, words, "text_encoder_2")
    assert not equal(base, words, "text_encoder")  # another vocabulary: another embedding
    assert equal(base, redrawn, "transformer") and not equal(base, redrawn, "text_encoder")
    record = json.loads((words / "pretraining.json").read_text())
    assert (record["text_tokens"], record["init_from"]) == ("word", str(base))
    assert all(f"--text-tokens word --init-from {base}" in command for command in record["reproduce"])
    backbone = miniature_backbone(words)
    assert backbone.pipe.tokenizer.tokenize("a person walks to the left")[-1] == "left"


def test_the_progress_counts_steps_when_a_step_limit_is_given(tmp_path, caplog):
    """The reproduce commands pass `--minutes 100000 --max-steps N`: a bar over the time budget would say ~69 days."""
    import logging

    from prefopt_plugins.miniature.pretrain import main

    with caplog.at_level(logging.INFO, logger="prefopt"):
        main(["--out", str(tmp_path / "model"), "--small", "--max-steps", "2", "--batch", "2", "--threads", "1",
              "--minutes", "100000"])
    assert "pretraining the miniature model (steps): 2/2 (100%)" in caplog.text


def test_a_checkpoint_is_continued_only_with_the_flags_it_started_with(tmp_path):
    """Its transformer learned to read the text encoders those flags chose."""
    from prefopt_plugins.miniature.pretrain import main

    small = ["--out", str(tmp_path / "model"), "--small", "--batch", "2", "--threads", "1"]
    main([*small, "--max-steps", "2"])
    with pytest.raises(SystemExit, match="started with the defaults, not with --text-tokens word"):
        main([*small, "--max-steps", "3", "--text-tokens", "word"])
    main([*small, "--max-steps", "3"])  # the same flags continue

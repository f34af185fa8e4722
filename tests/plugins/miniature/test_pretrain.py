"""Pretraining the miniature video model: resumable, step-exact, and saved as a pipeline prefopt loads."""

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

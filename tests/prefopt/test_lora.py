"""LoRA through peft: targets that do not fit are one sentence; the reference mode restores what it changed."""

import pytest
import torch

from prefopt.errors import PrefoptError
from prefopt.lora import POLICY_ADAPTER, adapter_parameters, add_lora, lora_state_dict, reference_mode


def test_targets_that_do_not_fit_the_model_are_one_sentence(make_backbone):
    backbone = make_backbone("stable-diffusion")
    with pytest.raises(PrefoptError, match=r"LoRA target modules \['no_such_layer'\] do not fit this model"):
        add_lora(backbone.denoiser, rank=2, alpha=2, dropout=0.0, target_modules=["no_such_layer"])


def test_the_reference_is_the_model_without_the_adapter_and_trainability_is_restored(make_backbone, with_lora):
    backbone = with_lora(make_backbone("stable-diffusion"))
    denoiser = backbone.denoiser
    flags = {n: p.requires_grad for n, p in denoiser.named_parameters()}
    x = torch.randn(1, 4, 8, 8)
    text = torch.randn(1, 4, 8)
    policy = denoiser(x, torch.tensor([10]), encoder_hidden_states=text).sample
    with reference_mode(denoiser):
        reference = denoiser(x, torch.tensor([10]), encoder_hidden_states=text).sample
    assert not torch.allclose(policy, reference)
    assert {n: p.requires_grad for n, p in denoiser.named_parameters()} == flags
    assert len(lora_state_dict(denoiser)) == len(adapter_parameters(denoiser, POLICY_ADAPTER)) > 0

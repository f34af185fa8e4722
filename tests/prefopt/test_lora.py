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


def test_sampling_with_a_denoiser_only_lora_does_not_warn_about_text_encoders(make_backbone, tmp_path):
    """#24 item 8: diffusers warns once per text encoder that prefopt's LoRA file has no keys for it; prefopt says
    nothing it knows to be expected (the same load through the pipeline directly still warns)."""
    import logging

    backbone = make_backbone("sd3")
    add_lora(backbone.denoiser, rank=2, alpha=2, dropout=0.0, target_modules=backbone.default_lora_targets)
    path = backbone.save_lora(tmp_path / "lora", lora_state_dict(backbone.denoiser))
    backbone.denoiser.delete_adapters(POLICY_ADAPTER)
    logger, records = logging.getLogger("diffusers.loaders.lora_base"), []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)  # whatever verbosity other tests left diffusers at
    try:
        backbone.use_loras([path])
        assert records == []
        backbone.pipe.load_lora_weights(str(path.parent), adapter_name="direct")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert any(m.startswith("No LoRA keys associated to CLIPTextModelWithProjection found with the "
                            "prefix='text_encoder'") for m in records)


def test_a_denoiser_class_without_adapter_methods_gets_them_and_trains_a_lora():
    """PixArt's transformer has no `add_adapter` (diffusers ships no LoRA loader for it): prefopt adds diffusers'
    peft methods to the instance, and nothing else about the model changes."""
    from diffusers import PixArtTransformer2DModel

    model = PixArtTransformer2DModel(sample_size=8, num_layers=1, patch_size=2, attention_head_dim=8,
                                     num_attention_heads=2, caption_channels=16, in_channels=4, cross_attention_dim=16,
                                     out_channels=8, norm_type="ada_norm_single", num_embeds_ada_norm=1000)
    assert not hasattr(model, "add_adapter")
    params = add_lora(model, rank=2, alpha=2, dropout=0.0, target_modules=["to_q", "to_v"])
    assert type(model).__name__ == "PixArtTransformer2DModel" and isinstance(model, PixArtTransformer2DModel)
    assert params and all(p.requires_grad for p in params) and len(lora_state_dict(model)) == len(params)
    model.set_adapters(["dpo"], [1.0])  # diffusers' own adapter switching works on it

"""HunyuanVideo's trimmed text stream: the same predictions and gradients without padded tokens or mask."""

import pytest
import torch

from prefopt.dpo_steps import SCHEDULES, Batch
from prefopt.errors import PrefoptError
from prefopt.lora import POLICY_ADAPTER, adapter_parameters
from prefopt.speed_levers import enable_block_checkpointing, set_attention_backend
from prefopt.trainer import TrainerConfig

# Different token counts, so trimming groups the batch by prompt length and must restore its order.
PROMPTS = ["a cat", "a man walks his dog", "a cat", "a man walks his dog"]


def _inputs(backbone, prompts=PROMPTS):
    gen = torch.Generator().manual_seed(0)
    n = len(prompts)
    latents = torch.randn(n, 4, 2, 4, 4, generator=gen)
    noise = torch.randn(n, 4, 2, 4, 4, generator=gen)
    timesteps = torch.tensor([0.2, 0.5, 0.7, 0.9][:n])
    return latents, noise, timesteps, backbone.encode_prompts(prompts)


@pytest.mark.slow
def test_trimmed_text_gives_the_same_predictions(make_backbone):
    kept, trimmed = make_backbone("hunyuan-video", text_padding="keep"), make_backbone("hunyuan-video")
    latents, noise, timesteps, conditioning = _inputs(kept)
    mask = conditioning["prompt_attention_mask"]
    assert 0 < mask[0].sum() < mask[1].sum() < mask.shape[1] + 1  # padded, and of two different lengths
    with torch.no_grad():
        expected = kept.forward_train(latents, noise, timesteps, conditioning).prediction
        got = trimmed.forward_train(latents, noise, timesteps, conditioning).prediction
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_trimmed_text_lets_mask_free_attention_kernels_run(make_backbone):
    kept, trimmed = make_backbone("hunyuan-video", text_padding="keep"), make_backbone("hunyuan-video")
    latents, noise, timesteps, conditioning = _inputs(kept, PROMPTS[:2])
    with torch.no_grad():
        expected = kept.forward_train(latents, noise, timesteps, conditioning).prediction
        set_attention_backend(kept.denoiser, "_native_flash")
        with pytest.raises(ValueError, match="attn_mask"):  # diffusers' forward always passes a mask
            kept.forward_train(latents, noise, timesteps, conditioning)
        set_attention_backend(trimmed.denoiser, "_native_flash")
        got = trimmed.forward_train(latents, noise, timesteps, conditioning).prediction
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("schedule", ["joint", "split"])
def test_trimmed_text_gives_the_same_gradients_under_checkpointing(make_backbone, with_lora, schedule):
    """Checkpointed blocks are recomputed in backward, outside the forward's mask-free setting: the
    recomputation must replay it (prefopt.speed_levers) to reproduce the forward exactly. In float64: the two
    paths sum in different orders, and β/2 = 100 scales float32's rounding (1e-7) past any tight bound."""
    grads = {}
    for padding in ("keep", "trim"):
        backbone = with_lora(make_backbone("hunyuan-video", text_padding=padding, dtype="float64"))
        backbone.denoiser.to(torch.float64)  # the LoRA too (it stays float32 by default)
        enable_block_checkpointing(backbone.denoiser, every=1)
        backbone.denoiser.train()
        latents, noise, timesteps, conditioning = _inputs(backbone)
        latents, noise, timesteps = (t.double() for t in (latents, noise, timesteps))
        batch = Batch(latents=latents, conditioning=conditioning, weights=torch.ones(2))
        config = TrainerConfig(beta=200.0, report_to="none")
        SCHEDULES[schedule](backbone, backbone.denoiser, backbone.denoiser, batch, noise[:2], timesteps[:2], config,
                            None, backward=torch.Tensor.backward)
        grads[padding] = [p.grad.clone() for p in adapter_parameters(backbone.denoiser, POLICY_ADAPTER)]
    assert any(g.abs().sum() > 0 for g in grads["keep"])
    for a, b in zip(grads["keep"], grads["trim"], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_left_padded_text_is_refused_with_the_fix(make_backbone):
    backbone = make_backbone("hunyuan-video")
    latents, noise, timesteps, conditioning = _inputs(backbone, PROMPTS[:2])
    conditioning["prompt_attention_mask"] = conditioning["prompt_attention_mask"].flip(1)  # padding first
    with pytest.raises(PrefoptError, match=r"valid text tokens first.*padding_side='right'"):
        backbone.forward_train(latents, noise, timesteps, conditioning)


def _shifted(shift: float, num: int = 1000) -> torch.Tensor:
    sigmas = torch.linspace(1.0, 1.0 / num, num, dtype=torch.float64).flip(0)
    return (shift * sigmas / (1.0 + (shift - 1.0) * sigmas)).float()


def test_wan_trains_on_its_schedulers_flow_shift(make_backbone):
    """Wan ships UniPC / DPM-Solver schedulers, whose shift is `flow_shift`; it must not train unshifted."""
    from diffusers import UniPCMultistepScheduler

    backbone = make_backbone("wan")
    backbone.pipe.scheduler = UniPCMultistepScheduler(flow_shift=5.0, use_flow_sigmas=True,
                                                      prediction_type="flow_prediction")
    torch.testing.assert_close(backbone._training_sigmas(), _shifted(5.0))
    assert backbone._training_sigmas().median() > 0.8  # unshifted, the median would be 0.5


def test_the_shift_option_overrides_the_scheduler(make_backbone):
    backbone = make_backbone("hunyuan-video")  # its scheduler's shift is 7
    torch.testing.assert_close(backbone._training_sigmas(), _shifted(7.0))
    lowered = make_backbone("hunyuan-video", shift=3.0)
    torch.testing.assert_close(lowered._training_sigmas(), _shifted(3.0))
    draws = lowered.sample_timesteps(4000, torch.Generator().manual_seed(0))
    assert (draws < 0.5).float().mean() > 2 * (backbone.sample_timesteps(4000, torch.Generator().manual_seed(0)) < 0.5).float().mean()

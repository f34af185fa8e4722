"""DPO step schedules: the same loss and gradients, different memory and compute trade-offs.

``joint``: one policy forward on [winners, losers] with gradients, one backward (the straightforward step).

``split``: for long videos, where the activations of a joint forward do not fit. First a no-grad pass
computes the four errors (policy and reference, winner and loser) and, analytically, the gradient of
the loss with respect to each policy error. Then each sample is forwarded again with gradients and
back-propagated with its error's gradient as a scalar weight, so one sample's activations live at a
time. By the chain rule the accumulated parameter gradient equals the joint step's; it costs one extra
policy forward per sample.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from prefopt.lora import reference_mode
from prefopt.losses import diffusion_dpo_loss, dpo_metrics, per_sample_mse


def _errors(backbone, model, batch, noise, timesteps) -> torch.Tensor:
    out = backbone.forward_train(batch.latents, noise, timesteps, batch.conditioning, denoiser=model)
    return per_sample_mse(out.prediction, out.target) * out.weights


def _policy_errors(backbone, model, batch, noise, timesteps, config) -> torch.Tensor:
    """The policy's errors with gradients; activations saved on the host when ``offload_activations``."""
    if not config.offload_activations:
        return _errors(backbone, model, batch, noise, timesteps)
    with torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()):
        return _errors(backbone, model, batch, noise, timesteps)


def _loss_terms(config, err_w, err_l, ref_w, ref_l, weights) -> torch.Tensor:
    return diffusion_dpo_loss(err_w, err_l, ref_w, ref_l, beta=config.beta, loss_type=config.loss_type,
                              label_smoothing=config.label_smoothing, sft_weight=config.rpo_alpha,
                              weights=weights).mean()


def reference_errors(backbone, denoiser, batch, noise, timesteps, reference_adapter) -> torch.Tensor:
    with torch.no_grad(), reference_mode(denoiser, reference_adapter):
        return _errors(backbone, denoiser, batch, noise, timesteps)


def joint_step(backbone, denoiser, model, batch, noise, timesteps, config, reference_adapter,
               backward: Callable[[torch.Tensor], None]) -> dict[str, float]:
    """Policy forward on winners and losers together, one backward."""
    noise2, t2 = torch.cat([noise, noise]), torch.cat([timesteps, timesteps])
    ref_w, ref_l = reference_errors(backbone, denoiser, batch, noise2, t2, reference_adapter).chunk(2)
    err_w, err_l = _policy_errors(backbone, model, batch, noise2, t2, config).chunk(2)
    loss = _loss_terms(config, err_w, err_l, ref_w, ref_l, batch.weights)
    backward(loss)
    return {"loss": loss.item(), **dpo_metrics(err_w, err_l, ref_w, ref_l, beta=config.beta)}


def split_step(backbone, denoiser, model, batch, noise, timesteps, config, reference_adapter,
               backward: Callable[[torch.Tensor], None]) -> dict[str, float]:
    """No-grad errors, analytic loss gradient per error, then one sample's forward+backward at a time."""
    noise2, t2 = torch.cat([noise, noise]), torch.cat([timesteps, timesteps])
    ref_w, ref_l = reference_errors(backbone, denoiser, batch, noise2, t2, reference_adapter).chunk(2)
    with torch.no_grad():
        err_w, err_l = _errors(backbone, model, batch, noise2, t2).chunk(2)
    leaf_w, leaf_l = err_w.clone().requires_grad_(True), err_l.clone().requires_grad_(True)
    loss = _loss_terms(config, leaf_w, leaf_l, ref_w, ref_l, batch.weights)
    grad_w, grad_l = torch.autograd.grad(loss, (leaf_w, leaf_l))
    coefficients = torch.cat([grad_w, grad_l])
    pairs = noise.shape[0]
    for index in range(2 * pairs):
        single = _slice_batch(batch, index)
        error = _policy_errors(backbone, model, single, noise2[index : index + 1], t2[index : index + 1], config)
        backward((coefficients[index] * error).sum())
    return {"loss": loss.item(), **dpo_metrics(err_w, err_l, ref_w, ref_l, beta=config.beta)}


def _slice_batch(batch, index: int):
    from prefopt.trainer import Batch

    return Batch(latents=batch.latents[index : index + 1],
                 conditioning={k: v[index : index + 1] for k, v in batch.conditioning.items()},
                 weights=batch.weights)


SCHEDULES = {"joint": joint_step, "split": split_step}

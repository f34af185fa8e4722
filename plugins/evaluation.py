"""The paper's evaluation metrics (Table 1), computed with the reward plugins' models.

| metric | how |
|---|---|
| Face Sim | ConsisID-style: frames at linspace, the largest face, max(0, cos) to the mean reference embedding (ArcFace with ``insightface-id``) |
| Dynamic Degree | fraction of videos VBench calls dynamic (RAFT with ``raft-dynamic``) |
| Temporal consistency | mean cosine between consecutive frames' CLIP image features |
| CLIP-T | 100 × cosine between the prompt's and each frame's CLIP features |
| CLIP-I | 100 × cosine between each frame's and the reference photos' CLIP image features |
| FVD | needs I3D weights, which no package ships; reported as unavailable rather than approximated |
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prefopt_plugins.rewards.common import linspace_indices

UNAVAILABLE = "unavailable"


def face_similarity(identity_reward, videos: Sequence[np.ndarray], references, frames: int = 8) -> float:
    """Mean over videos of the mean over sampled frames of max(0, similarity); no face counts as 0."""
    reference = identity_reward.reference_embedding(references)
    per_video = []
    for video in videos:
        sims = []
        for index in linspace_indices(len(video), frames):
            embedding = identity_reward.embed_largest_face(video[index])
            sims.append(0.0 if embedding is None else
                        max(0.0, float(identity_reward.similarity(embedding[None], reference)[0])))
        per_video.append(np.mean(sims))
    return float(np.mean(per_video))


def dynamic_degree(dynamics_reward, videos: Sequence[np.ndarray]) -> float:
    scores = dynamics_reward.score(list(videos), [""] * len(videos), [])
    return float(np.mean([bool(s.metadata["vbench_dynamic"]) for s in scores]))


def temporal_consistency(clip_reward, videos: Sequence[np.ndarray]) -> float:
    values = []
    for video in videos:
        features = clip_reward.image_features(np.asarray(video))
        values.append(float((features[:-1] * features[1:]).sum(dim=-1).mean()))
    return float(np.mean(values))


def clip_t(clip_reward, videos: Sequence[np.ndarray], prompts: Sequence[str]) -> float:
    return float(np.mean([s.raw for s in clip_reward.score(list(videos), list(prompts), [])]))


def clip_i(clip_reward, videos: Sequence[np.ndarray], references) -> float:
    reference = clip_reward.image_features(np.stack([np.asarray(r) for r in _same_size(references)])).mean(dim=0)
    reference = reference / reference.norm()
    values = []
    for video in videos:
        frames = np.asarray(video)[linspace_indices(len(video), clip_reward.config.frames)]
        values.append(float(100.0 * (clip_reward.image_features(frames) @ reference).mean()))
    return float(np.mean(values))


def _same_size(references):
    from prefopt.media import resize_frames

    height, width = np.asarray(references[0]).shape[:2]
    return [resize_frames(np.asarray(r)[None], height, width)[0] for r in references]


def evaluate_videos(videos, prompts, references, *, identity=None, dynamics=None, clip=None) -> dict:
    """Every metric that the given models allow; the others are ``"unavailable"``."""
    return {
        "face_sim": face_similarity(identity, videos, references) if identity else UNAVAILABLE,
        "dynamic_degree": dynamic_degree(dynamics, videos) if dynamics else UNAVAILABLE,
        "temporal_consistency": temporal_consistency(clip, videos) if clip else UNAVAILABLE,
        "clip_t": clip_t(clip, videos, prompts) if clip else UNAVAILABLE,
        "clip_i": clip_i(clip, videos, references) if clip else UNAVAILABLE,
        "fvd": UNAVAILABLE,  # needs I3D weights and a reference video set; never approximated per image
    }

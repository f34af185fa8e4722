"""The paper's evaluation metrics (Table 1), computed with the reward plugins' models.

| metric | how |
|---|---|
| Face Sim (FaceSim-Arc) | ConsisID's protocol (``eval/get_facesim_fid.py``), :func:`face_similarity_consisid`: 16 frames at ``linspace(0, F−1, 16)`` (truncated), the largest face, a frame without one retried padded 1.25× in grey and skipped if still face-less, max(0, cos) to the *first* reference photo, mean over the frames with a face (0 for a video with none); the face-less frame count is reported beside it. With ``insightface-id`` the detector runs at 320 as ConsisID's does. FaceSim-Cur needs CurricularFace IR-101 weights and is reported unavailable |
| Face Sim, earlier variant | ``face_sim: all_frames_mean_reference``: 8 frames, face-less frames count as 0, the mean of every reference's embedding (:func:`face_similarity_all_frames`) |
| Dynamic Degree | VBench's: the fraction of videos it calls dynamic (``raft-dynamic``, VBench's ``raft-things`` weights with 20 iterations by default), and the mean flow score (top-5 % flow magnitude per frame pair, in pixels) |
| Temporal consistency | mean cosine between consecutive frames' CLIP image features |
| CLIP-T | 100 × cosine between the prompt's and each frame's CLIP features |
| CLIP-I | 100 × cosine between each frame's and the reference photos' CLIP image features |
| FVD | needs I3D weights, which no package ships; reported as unavailable rather than approximated |
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prefopt.errors import PrefoptError
from prefopt.media import describe, linspace_indices

UNAVAILABLE = "unavailable"


CONSISID_FRAMES = 16
CONSISID_PAD = 1.25  # ConsisID retries a face-less frame padded by 25 % of its size on each side, in grey
CONSISID_GREY = 128


def pad_grey(image: np.ndarray, scale: float = CONSISID_PAD) -> np.ndarray:
    """The frame with ``(scale − 1)·H`` grey rows above and below and ``(scale − 1)·W`` columns each side."""
    height, width = image.shape[:2]
    top, left = int(height * (scale - 1.0)), int(width * (scale - 1.0))
    return np.pad(image, ((top, top), (left, left), (0, 0)), constant_values=CONSISID_GREY)


def consisid_embedding(identity_reward, image: np.ndarray) -> np.ndarray | None:
    """The largest face's embedding, retrying on the grey-padded frame when the detector finds none."""
    embedding = identity_reward.embed_largest_face(image)
    return embedding if embedding is not None else identity_reward.embed_largest_face(pad_grey(image))


def face_similarity_consisid(identity_reward, videos: Sequence[np.ndarray], references,
                             frames: int = CONSISID_FRAMES) -> tuple[float, int, int]:
    """(FaceSim-Arc, face-less frames, frames sampled) by ConsisID's protocol, against the first reference."""
    reference = consisid_embedding(identity_reward, np.asarray(references[0]))
    if reference is None:
        raise PrefoptError(f"no face was detected in reference {describe(references[0], 0)}, even padded.")
    per_video, faceless, sampled = [], 0, 0
    for video in videos:
        indices = np.linspace(0, len(video) - 1, frames).astype(int)  # ConsisID's frame choice (truncation)
        sims = []
        for index in indices:
            embedding = consisid_embedding(identity_reward, np.asarray(video[index]))
            if embedding is None:
                faceless += 1
                continue
            sims.append(max(0.0, float(identity_reward.similarity(embedding[None], reference)[0])))
        sampled += len(indices)
        per_video.append(float(np.mean(sims)) if sims else 0.0)
    return float(np.mean(per_video)), faceless, sampled


def face_similarity_all_frames(identity_reward, videos: Sequence[np.ndarray], references, frames: int = 8) -> float:
    """prefopt's earlier Face Sim: mean over sampled frames of max(0, similarity) to the mean embedding of every
    reference photo; a frame without a face counts as 0."""
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


def dynamic_degree(dynamics_reward, videos: Sequence[np.ndarray]) -> tuple[float, float]:
    """(VBench's Dynamic Degree: the fraction of dynamic videos, the mean flow score in pixels)."""
    scores = dynamics_reward.score(list(videos), [""] * len(videos), [])
    flow = [np.mean(s.metadata["per_pair_top5"]) if s.metadata["per_pair_top5"] else 0.0 for s in scores]
    return float(np.mean([bool(s.metadata["vbench_dynamic"]) for s in scores])), float(np.mean(flow))


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


def evaluate_videos(videos, prompts, references, *, identity=None, dynamics=None, clip=None,
                    face_sim: str = "consisid") -> dict:
    """Every metric that the given models allow; the others are ``"unavailable"``."""
    row: dict = {"face_sim": UNAVAILABLE, "face_sim_cur": UNAVAILABLE, "faceless_frames": UNAVAILABLE,
                 "dynamic_degree": UNAVAILABLE, "flow_score": UNAVAILABLE}
    if identity is not None and face_sim == "consisid":
        row["face_sim"], faceless, sampled = face_similarity_consisid(identity, videos, references)
        row["faceless_frames"] = f"{faceless}/{sampled}"
    elif identity is not None:
        row["face_sim"] = face_similarity_all_frames(identity, videos, references)
    if dynamics is not None:
        row["dynamic_degree"], row["flow_score"] = dynamic_degree(dynamics, videos)
    return {
        **row,
        "temporal_consistency": temporal_consistency(clip, videos) if clip else UNAVAILABLE,
        "clip_t": clip_t(clip, videos, prompts) if clip else UNAVAILABLE,
        "clip_i": clip_i(clip, videos, references) if clip else UNAVAILABLE,
        "fvd": UNAVAILABLE,  # needs I3D weights and a reference video set; never approximated per image
    }

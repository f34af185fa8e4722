"""Identity rewards (MagicID's R_id): similarity of the largest face in sampled frames to the references.

Per sampled frame the largest detected face is embedded and compared with the mean embedding of the
reference photos; frames without a face contribute ``no_face_floor``; the raw score is the mean over
frames, mapped linearly from ``raw_range`` to 1–10. Two backends share this logic:

* ``insightface-id``: insightface detection (SCRFD), 5-point alignment and ArcFace recognition (the
  paper's ID encoder); similarity = cosine.
* ``dlib-id``: dlib's HOG detector, 5-point landmarks and ResNet descriptor (public-domain weights from
  the ``face-recognition-models`` package); similarity = 1 − Euclidean distance (same person < 0.6).
"""

from __future__ import annotations

import abc
import hashlib
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prefopt.errors import MissingWeightsError, PrefoptError
from prefopt.interfaces import FACE_EMBEDDING, RewardScore
from prefopt.media import describe, linspace_indices
from prefopt.scale import check_raw_range, to_scale


@dataclass
class IdentityConfig:
    frames: int = field(default=8, metadata={"min": 1, "help": "Frames sampled per video (evenly spaced)."})
    no_face_floor: float = field(
        default=0.0, metadata={"help": "Raw similarity a frame without a detectable face contributes."}
    )
    raw_min: float = field(default=0.0, metadata={"help": "Raw similarity mapped to score 1."})
    raw_max: float = field(default=1.0, metadata={"help": "Raw similarity mapped to score 10."})

    def __post_init__(self) -> None:
        check_raw_range(self)


class IdentityReward(abc.ABC):
    """Shared scoring: largest face per frame, similarity to the mean reference embedding."""

    name: str
    measures = frozenset({FACE_EMBEDDING})

    def __init__(self, config: IdentityConfig):
        self.config = config
        self.raw_range = (config.raw_min, config.raw_max)
        self._reference_cache: tuple[tuple[str, ...], np.ndarray] | None = None

    @abc.abstractmethod
    def embed_largest_face(self, image: np.ndarray) -> np.ndarray | None:
        """Embedding of the largest face in an RGB uint8 image, or None when there is no face."""

    @abc.abstractmethod
    def similarity(self, embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Similarity of each row of ``embeddings`` to ``reference``."""

    def aggregate_references(self, embeddings: np.ndarray) -> np.ndarray:
        return embeddings.mean(axis=0)

    def reference_embedding(self, references: Sequence[np.ndarray]) -> np.ndarray:
        """Mean embedding of the reference photos (computed once per reference set)."""
        if not references:
            raise PrefoptError(f"reward `{self.name}` needs at least one reference photo.")
        # Keyed by content, not id(): a photo freed and another allocated at its address would share an id.
        key = tuple(hashlib.sha1(np.ascontiguousarray(np.asarray(r)).tobytes()).hexdigest() for r in references)
        if self._reference_cache and self._reference_cache[0] == key:
            return self._reference_cache[1]
        embeddings = []
        for index, photo in enumerate(references):
            embedding = self.embed_largest_face(np.asarray(photo))
            if embedding is None:
                raise PrefoptError(
                    f"no face was detected in reference {describe(photo, index)}; use a photo where the face is "
                    "clearly visible and at least about 80 pixels wide."
                )
            embeddings.append(embedding)
        reference = self.aggregate_references(np.stack(embeddings))
        self._reference_cache = (key, reference)
        return reference

    def check_references(self, references: Sequence[np.ndarray]) -> None:
        """Raise one sentence naming a reference photo without a detectable face (run before any training)."""
        self.reference_embedding(references)

    def score(self, videos, prompts, references) -> list[RewardScore]:
        reference = self.reference_embedding(references)
        return [self._score_video(np.asarray(video), reference) for video in videos]

    def _score_video(self, video: np.ndarray, reference: np.ndarray) -> RewardScore:
        indices = linspace_indices(len(video), self.config.frames)
        embeddings = [self.embed_largest_face(video[i]) for i in indices]
        found = [e for e in embeddings if e is not None]
        sims = np.full(len(indices), self.config.no_face_floor, dtype=np.float64)
        if found:
            mask = np.array([e is not None for e in embeddings])
            sims[mask] = self.similarity(np.stack(found), reference)
        raw = float(sims.mean())
        metadata = {"frames": len(indices), "frames_without_face": int(len(indices) - len(found)),
                    "per_frame": [round(float(s), 4) for s in sims]}
        return RewardScore(value=to_scale(raw, self.raw_range), raw=raw, metadata=metadata)


# --- dlib ---------------------------------------------------------------------------------------------

DLIB_MODELS = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")


@dataclass
class DlibIdentityConfig(IdentityConfig):
    models_dir: str = field(
        default="", metadata={"help": "Folder with dlib's model files; empty uses the face-recognition-models package."}
    )
    upsample: int = field(default=1, metadata={"min": 0, "help": "Detector upsampling (finds smaller faces, slower)."})


def dlib_models_dir(configured: str) -> Path:
    """The folder holding dlib's 5-point landmark and ResNet models, or a clear error."""
    if configured:
        folder = Path(configured)
    else:
        spec = importlib.util.find_spec("face_recognition_models")  # importing it needs pkg_resources
        if spec is None or not spec.submodule_search_locations:
            raise MissingWeightsError(
                "dlib's face models are not installed: `pip install 'prefopt[dlib]'` (dlib-bin and "
                "face-recognition-models), or set `models_dir` to a folder with " + " and ".join(DLIB_MODELS) + "."
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    missing = [m for m in DLIB_MODELS if not (folder / m).is_file()]
    if missing:
        raise MissingWeightsError(f"dlib model file(s) {', '.join(missing)} are missing from `{folder}`.")
    return folder


class DlibIdentityReward(IdentityReward):
    """Identity from dlib's ResNet face descriptor (offline default; real public-domain weights)."""

    name = "dlib-id"
    Config = DlibIdentityConfig

    @classmethod
    def missing_weights(cls, config: DlibIdentityConfig) -> str | None:
        try:
            dlib_models_dir(config.models_dir)
        except MissingWeightsError as e:
            return str(e)
        if importlib.util.find_spec("dlib") is None:
            return "dlib is not installed: `pip install 'prefopt[dlib]'` (the dlib-bin wheel)."
        return None

    def __init__(self, config: DlibIdentityConfig):
        super().__init__(config)
        import dlib

        folder = dlib_models_dir(config.models_dir)
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(folder / DLIB_MODELS[0]))
        self._encoder = dlib.face_recognition_model_v1(str(folder / DLIB_MODELS[1]))
        self._folder = folder
        self._dlib_version = dlib.__version__

    def embed_largest_face(self, image: np.ndarray) -> np.ndarray | None:
        image = np.ascontiguousarray(image[..., :3])
        faces = self._detector(image, self.config.upsample)
        if len(faces) == 0:
            return None
        largest = max(faces, key=lambda r: r.width() * r.height())
        shape = self._landmarks(image, largest)
        return np.asarray(self._encoder.compute_face_descriptor(image, shape), dtype=np.float64)

    def similarity(self, embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return 1.0 - np.linalg.norm(embeddings - reference[None], axis=1)

    def provenance(self) -> dict:
        return {"model": "dlib_face_recognition_resnet_model_v1", "landmarks": "5-point",
                "dlib": self._dlib_version, "models_dir": os.fspath(self._folder)}


# --- insightface ---------------------------------------------------------------------------------------


@dataclass
class InsightFaceIdentityConfig(IdentityConfig):
    pack: str = field(default="antelopev2", metadata={"help": "insightface model pack (antelopev2 or buffalo_l)."})
    root: str = field(default="~/.insightface", metadata={"help": "insightface root; packs live in `<root>/models/<pack>`."})
    model_dir: str = field(default="", metadata={"help": "A folder with the pack's ONNX files (overrides pack/root)."})
    det_size: int = field(default=640, metadata={"min": 32, "help": "Detector input size (square)."})
    det_thresh: float = field(default=0.5, metadata={"min": 0, "max": 1, "help": "Face detection confidence threshold."})
    device: str = field(default="auto", metadata={"help": "`auto` (CUDA when onnxruntime has it), `cpu` or `cuda`."})


def insightface_pack_dir(config: InsightFaceIdentityConfig) -> Path:
    if config.model_dir:
        return Path(config.model_dir).expanduser()
    return Path(config.root).expanduser() / "models" / config.pack


class InsightFaceIdentityReward(IdentityReward):
    """Identity from insightface: SCRFD detection, 5-point alignment, ArcFace embedding (the paper's ID encoder)."""

    name = "insightface-id"
    Config = InsightFaceIdentityConfig

    @classmethod
    def missing_weights(cls, config: InsightFaceIdentityConfig) -> str | None:
        absent = [name for name in ("insightface", "onnxruntime") if importlib.util.find_spec(name) is None]
        if absent:  # an optional extra: found with the weights, before any work
            return (f"reward `insightface-id` needs {' and '.join(absent)}, not installed: "
                    "`pip install 'prefopt[insightface]'`.")
        folder = insightface_pack_dir(config)
        if folder.is_dir() and any(folder.glob("*.onnx")):
            return None
        return (f"insightface model pack `{config.pack}` is not in `{folder}`: unzip the pack's ONNX files "
                "(a SCRFD detector and an ArcFace recognition model) there, or set the reward's `model_dir`; "
                "insightface's automatic download is not used.")

    def __init__(self, config: InsightFaceIdentityConfig):
        super().__init__(config)
        message = self.missing_weights(config)
        if message:
            raise MissingWeightsError(message)
        import onnxruntime
        from insightface.app import FaceAnalysis

        available = onnxruntime.get_available_providers()
        use_cuda = config.device != "cpu" and "CUDAExecutionProvider" in available
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        self._folder = insightface_pack_dir(config)
        self._app = FaceAnalysis(name=str(self._folder), allowed_modules=["detection", "recognition"],
                                 providers=providers)
        self._app.prepare(ctx_id=0 if use_cuda else -1, det_size=(config.det_size, config.det_size),
                          det_thresh=config.det_thresh)

    def embed_largest_face(self, image: np.ndarray) -> np.ndarray | None:
        faces = self._app.get(np.ascontiguousarray(image[..., ::-1]))  # insightface takes BGR
        if not faces:
            return None
        largest = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
        return np.asarray(largest.normed_embedding, dtype=np.float64)

    def aggregate_references(self, embeddings: np.ndarray) -> np.ndarray:
        mean = embeddings.mean(axis=0)
        return mean / np.linalg.norm(mean)

    def similarity(self, embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return embeddings @ reference  # cosine: both unit-norm

    def provenance(self) -> dict:
        import insightface

        models = sorted(p.name for p in self._folder.glob("*.onnx"))
        return {"model": f"insightface-{self.config.pack}", "files": models, "insightface": insightface.__version__}

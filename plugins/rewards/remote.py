"""Prompt following rated 1–10 by a vision-language model behind an OpenAI-compatible server (vLLM, SGLang, TGI,
a hosted API): how large judges are served in real deployments, outside the training process.

Each video is sent as a few evenly spaced frames (PNG data URLs) with the rating question, several requests at a
time. With ``logprobs`` the score is the expected rating under the first answer token's probabilities (as the
in-process ``vlm-semantic`` reward computes it); otherwise the first number of the reply. A request that times out
or gets a 429/5xx is retried with exponential backoff; a server that does not answer is one sentence, found before
any work (``missing_weights``), and again if it goes away mid-run.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from prefopt.errors import PrefoptError
from prefopt.interfaces import RewardScore
from prefopt.media import linspace_indices
from prefopt.scale import to_scale
from prefopt_plugins.rewards.semantic import DEFAULT_QUESTION, downscale_frames

RETRIED_STATUS = {408, 425, 429, 500, 502, 503, 504}
RATING = re.compile(r"\b(10|[1-9])(?:\.\d+)?\b")


@dataclass
class RemoteVLMConfig:
    base_url: str = field(default="http://localhost:8000/v1",
                          metadata={"help": "The server's OpenAI-compatible API root (`vllm serve MODEL` listens on "
                                            "http://localhost:8000/v1)."})
    model: str = field(default="Qwen/Qwen2.5-VL-7B-Instruct", metadata={"help": "The model name the server serves."})
    api_key_env: str = field(default="OPENAI_API_KEY",
                             metadata={"help": "Environment variable holding the API key (unset: no key sent)."})
    frames: int = field(default=4, metadata={"min": 1, "help": "Frames sent per video (evenly spaced)."})
    max_side: int = field(default=448, metadata={"min": 1, "help": "Frames are downscaled so their longer side is at most this."})
    question: str = field(default=DEFAULT_QUESTION, metadata={"help": "The rating question; `{prompt}` is replaced."})
    logprobs: bool = field(default=True, metadata={"help": "Ask for the answer's token probabilities (expected rating); "
                                                           "off, or when the server gives none: the reply's number."})
    concurrency: int = field(default=8, metadata={"min": 1, "help": "Requests in flight at once."})
    timeout_s: float = field(default=60.0, metadata={"above": 0, "help": "Seconds one request may take."})
    retries: int = field(default=4, metadata={"min": 0, "help": "Retries of a request that timed out or got 429/5xx."})
    backoff_s: float = field(default=1.0, metadata={"min": 0, "help": "First retry's wait; doubled each retry."})

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"`base_url` must start with http:// or https://, got `{self.base_url}`")


class RemoteVLMReward:
    """Prompt following rated 1–10 by a VLM behind an OpenAI-compatible server (vLLM and kin)."""

    name = "remote-vlm"
    Config = RemoteVLMConfig
    raw_range = (1.0, 10.0)

    @classmethod
    def missing_weights(cls, config: RemoteVLMConfig) -> str | None:
        """The server answers `GET /models` (and serves the model), or one sentence saying what is wrong."""
        try:
            listing = _request(config, "GET", "/models", None, timeout=min(config.timeout_s, 10.0))
        except PrefoptError as e:
            return str(e)
        served = [entry.get("id") for entry in listing.get("data", []) if isinstance(entry, dict)]
        if served and config.model not in served:
            return (f"reward `remote-vlm`: the server at {config.base_url} serves {', '.join(map(str, served))}, "
                    f"not `{config.model}`; set the reward's `model` option to one of them.")
        return None

    def __init__(self, config: RemoteVLMConfig):
        message = self.missing_weights(config)
        if message:
            raise PrefoptError(message)
        self.config = config

    def score(self, videos, prompts, references) -> list[RewardScore]:
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(self._rate, videos, prompts))

    def _rate(self, video: np.ndarray, prompt: str) -> RewardScore:
        c = self.config
        frames = downscale_frames(np.asarray(video)[linspace_indices(len(video), c.frames)], c.max_side)
        content = [{"type": "image_url", "image_url": {"url": _data_url(frame)}} for frame in frames]
        content.append({"type": "text", "text": c.question.format(prompt=prompt)})
        body = {"model": c.model, "messages": [{"role": "user", "content": content}], "max_tokens": 4,
                "temperature": 0.0}
        if c.logprobs:
            body.update(logprobs=True, top_logprobs=20)
        choice = _request(c, "POST", "/chat/completions", body)["choices"][0]
        reply = str((choice.get("message") or {}).get("content") or "")
        distribution = _rating_distribution(choice) if c.logprobs else None
        if distribution is not None:
            raw = float(np.dot(np.arange(1, 11), distribution))
            return RewardScore(value=to_scale(raw, self.raw_range), raw=raw,
                               metadata={"reply": reply, "distribution": [round(float(p), 4) for p in distribution]})
        match = RATING.search(reply)
        if match is None:
            raise PrefoptError(f"reward `remote-vlm`: the reply `{reply[:80]}` for prompt `{prompt}` holds no rating "
                               "from 1 to 10; make `question` ask for a single number.")
        raw = float(match.group(1))
        return RewardScore(value=to_scale(raw, self.raw_range), raw=raw, metadata={"reply": reply})

    def provenance(self) -> dict:
        return {"model": self.config.model, "server": self.config.base_url, "logprobs": self.config.logprobs}


def _rating_distribution(choice: dict) -> np.ndarray | None:
    """P(rating = 1..10) from the first answer token's top log-probabilities, or None when the server sent none
    that are ratings. ("10" counts where the tokenizer has it as one token.)"""
    tokens = ((choice.get("logprobs") or {}).get("content") or [])
    if not tokens:
        return None
    probs = np.zeros(10)
    for entry in tokens[0].get("top_logprobs") or []:
        text = str(entry.get("token", "")).strip()
        if text.isdigit() and 1 <= int(text) <= 10:
            probs[int(text) - 1] += math.exp(float(entry["logprob"]))
    return probs / probs.sum() if probs.sum() > 0 else None


def _data_url(frame: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _request(config: RemoteVLMConfig, method: str, path: str, body: dict | None, timeout: float | None = None) -> dict:
    """One JSON request, retried with backoff on a timeout, a refused connection or 408/425/429/5xx."""
    url = config.base_url.rstrip("/") + path
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    wait, last = config.backoff_s, "no answer"
    for attempt in range(config.retries + 1):
        if attempt:
            time.sleep(wait)
            wait *= 2
        try:
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            with urllib.request.urlopen(request, timeout=timeout or config.timeout_s) as response:
                return json.loads(response.read().decode())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:200]
            if e.code not in RETRIED_STATUS:
                raise PrefoptError(f"reward `remote-vlm`: the server at {config.base_url} refused {method} {path} "
                                   f"with {e.code}: {detail}") from e
            last = f"{e.code}: {detail}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            last = str(getattr(e, "reason", e))
        except ValueError as e:  # not JSON
            raise PrefoptError(f"reward `remote-vlm`: {url} did not answer JSON ({e}).") from e
    raise PrefoptError(f"reward `remote-vlm`: the server at {config.base_url} does not answer ({last}, "
                       f"{config.retries + 1} tries); start it (e.g. `vllm serve {config.model}`) or fix `base_url`.")

"""Content embeddings generated from the items' true content, for profiles without media (``scale``).

What a frozen image / audio encoder would output for the simulated videos, without rendering or decoding
them: each frame vector is a fixed random projection of the item's true content vector ``v_i`` plus
per-frame noise, L2-normalised; the audio vector likewise through another projection. So the content signal
the models must recover is there, at the real encoders' sizes (ViT-B-32 and Whisper-base: 512 each), and the
content, cold-start and two-tower stages can run at the seed's scale. Deterministic per (seed, item): the
noise of an item's frame comes from a fixed pool by a hash of its id, so any subset, in any order or chunking,
gets the same vectors. Pure numpy; no Dagster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from .platform import Platform


@dataclasses.dataclass(frozen=True)
class VectorSpec:
    n_frames: int = 8
    image_dim: int = 512
    audio_dim: int = 512
    noise: float = 1.0
    """Noise norm relative to the signal's (per frame; the pooled vector averages it down)."""
    seed: int = 0


class ContentVectorGenerator:
    POOL = 8191  # noise vectors per modality (prime, so (id * k + frame) % POOL mixes well)

    def __init__(self, platform: Platform, spec: VectorSpec = VectorSpec()):
        self.platform, self.spec = platform, spec
        rng = np.random.default_rng([platform.seed, 977, spec.seed])
        d = platform.profile.dim
        self.w_image = (rng.standard_normal((d, spec.image_dim)) / np.sqrt(d)).astype(np.float32)
        self.w_audio = (rng.standard_normal((d, spec.audio_dim)) / np.sqrt(d)).astype(np.float32)
        self.image_noise = (rng.standard_normal((self.POOL, spec.image_dim)) / np.sqrt(spec.image_dim)).astype(
            np.float32
        )
        self.audio_noise = (rng.standard_normal((self.POOL, spec.audio_dim)) / np.sqrt(spec.audio_dim)).astype(
            np.float32
        )
        self.fingerprint = (
            "generated-"
            + hashlib.sha256(
                json.dumps([platform.profile.name.split(":")[0], platform.seed, dataclasses.asdict(spec)]).encode()
            ).hexdigest()[:16]
        )

    def _signal(self, item_ids: np.ndarray, w: np.ndarray) -> np.ndarray:
        v = self.platform.true_item_content(item_ids) * np.sqrt(self.platform.profile.dim)  # ~unit norm
        x = v @ w
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    def frames(self, item_ids: np.ndarray) -> np.ndarray:
        """(n, n_frames, image_dim) float32, each frame L2-normalised."""
        ids = np.asarray(item_ids, dtype=np.int64)
        base = self._signal(ids, self.w_image)
        k = self.spec.n_frames
        pick = (ids[:, None] * 7919 + np.arange(k)[None, :] * 104729) % self.POOL
        x = base[:, None, :] + self.spec.noise * self.image_noise[pick]
        return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)

    def audio(self, item_ids: np.ndarray) -> np.ndarray:
        """(n, audio_dim) float32, L2-normalised."""
        ids = np.asarray(item_ids, dtype=np.int64)
        x = self._signal(ids, self.w_audio) + self.spec.noise * self.audio_noise[(ids * 6151) % self.POOL]
        return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)

    def describe(self) -> dict:
        return {"generated_from": "simulator true content", **dataclasses.asdict(self.spec)}

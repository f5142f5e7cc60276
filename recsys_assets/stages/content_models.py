"""The content encoders: an open_clip image tower for frames and a Whisper audio encoder, loaded the real way.

Image ("BLIP" in the seeds): ``open_clip.create_model(name, pretrained=...)`` where ``pretrained`` is
an open_clip tag (``laion2b_s34b_b79k``; needs its weights in the local Hugging Face cache, since
nothing is downloaded here) or a checkpoint file (``.safetensors``, or a torch file read with
``weights_only=True``). ``recsys-ViT-tiny-16`` is this package's own small open_clip config
(``recsys_assets/model_configs``) for machines without weights.

Audio: openai-whisper's :class:`whisper.model.AudioEncoder`, built from a checkpoint's ``dims`` and
its ``encoder.*`` weights: an openai ``.pt`` file (``{"dims", "model_state_dict"}``, read with
``weights_only=True``) or a ``.safetensors`` file of the same state dict (``dims`` then come from
``WHISPER_DIMS[size]``). ``random-small`` is a 2-layer, 64-wide encoder with random weights.

Without a checkpoint the weights are random (seeded, so deterministic): :attr:`ContentEncoders.random_weights`
says so, and the asset logs and records it. Every loaded pair gets a fingerprint -- sha256 of the
architecture, the weights and the decode settings -- that keys the embedding cache and is written into
each partition's metadata.

Checkpoint locations may be paths, ``file://``, ``s3://`` or ``https://`` URLs: remote ones are
copied once into ``cache_dir`` (configured by the user, so trusted; the media allowlist is for
URLs that come from data).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import typing
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from .media_decode import DecodeParams
from .media_fetch import FetchPolicy, fetch
from .torch_device import resolve_device

CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
TINY_IMAGE_MODEL = "recsys-ViT-tiny-16"
RANDOM_AUDIO_MODEL = "random-small"

# openai-whisper's published model dimensions (encoder part + decoder, as in the checkpoints' "dims").
WHISPER_DIMS: dict[str, dict[str, int]] = {
    name: dict(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=width,
        n_audio_head=heads,
        n_audio_layer=layers,
        n_vocab=51865,
        n_text_ctx=448,
        n_text_state=width,
        n_text_head=heads,
        n_text_layer=layers,
    )
    for name, (width, heads, layers) in {
        "tiny": (384, 6, 4),
        "base": (512, 8, 6),
        "small": (768, 12, 12),
        "medium": (1024, 16, 24),
    }.items()
}
WHISPER_DIMS["large-v3"] = dict(
    WHISPER_DIMS["medium"],
    n_mels=128,
    n_audio_state=1280,
    n_audio_head=20,
    n_audio_layer=32,
    n_vocab=51866,
    n_text_state=1280,
    n_text_head=20,
    n_text_layer=32,
)
WHISPER_DIMS[RANDOM_AUDIO_MODEL] = dict(
    n_mels=80,
    n_audio_ctx=1500,
    n_audio_state=64,
    n_audio_head=2,
    n_audio_layer=2,
    n_vocab=51865,
    n_text_ctx=448,
    n_text_state=64,
    n_text_head=2,
    n_text_layer=1,
)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    image_model: str = TINY_IMAGE_MODEL
    image_pretrained: typing.Optional[str] = None
    """An open_clip pretrained tag, or a checkpoint path/URL; None = random weights."""
    audio_model: str = RANDOM_AUDIO_MODEL
    """A Whisper size (tiny, base, small, medium, large-v3) or ``random-small``."""
    audio_checkpoint: typing.Optional[str] = None
    """A Whisper checkpoint path/URL (openai ``.pt`` or ``.safetensors``); None = random weights."""
    seed: int = 0
    """Seed of random weights."""
    n_frames: int = 8
    max_audio_s: float = 30.0
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    cache_dir: str = "~/.cache/recsys_assets/checkpoints"


def _register_configs() -> None:
    import open_clip

    if TINY_IMAGE_MODEL not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def local_checkpoint(location: str, cache_dir: str, s3_options: typing.Mapping[str, typing.Any] = {}) -> str:
    """A local file for ``location`` (path, ``file://``, ``s3://``, ``https://``), downloading once."""
    parsed = urlparse(location)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:
        path = Path(parsed.path if parsed.scheme == "file" else location).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {location!r} does not exist")
        return str(path)
    if parsed.scheme not in ("s3", "https", "http"):
        raise ValueError(f"checkpoint {location!r}: use a path, file://, s3:// or https://")
    target = Path(cache_dir).expanduser() / hashlib.sha256(location.encode()).hexdigest()[:16] / Path(parsed.path).name
    if not target.exists():
        policy = FetchPolicy(
            allowed_schemes=(parsed.scheme,),
            allowed_hosts=(parsed.netloc,),
            max_bytes=64 * 1024**3,
            read_timeout_s=300.0,
            s3_options=tuple(sorted(s3_options.items())),
        )
        data = fetch(location, policy)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return str(target)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded (safely); the message names it and says what was expected."""


def _refused(origin: str, path: str, e: BaseException) -> CheckpointError:
    import pickle

    if isinstance(e, pickle.UnpicklingError):
        why = (
            "refused: it holds pickled Python objects beyond tensors, and checkpoints are only read with "
            "torch.load(weights_only=True). Convert it to .safetensors, or save a plain state dict"
        )
    else:
        why = f"{type(e).__name__}: {e}. Expected a .safetensors file or a torch state dict"
    where = origin if origin == path else f"{origin} (local copy {path})"
    return CheckpointError(f"checkpoint {where} cannot be loaded: {why}")


def _load_state_dict(path: str, origin: str | None = None) -> dict[str, typing.Any]:
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise _refused(origin or path, path, e) from e


def weights_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        t = t.detach().to("cpu").contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def build_image_model(
    spec: ModelSpec, s3_options: typing.Mapping[str, typing.Any] = {}
) -> tuple[torch.nn.Module, dict]:
    """The open_clip model's visual tower and a description (architecture, source)."""
    import open_clip

    _register_configs()
    pretrained = spec.image_pretrained
    if pretrained and (("/" in pretrained) or pretrained.endswith((".safetensors", ".pt", ".pth", ".bin"))):
        pretrained = local_checkpoint(pretrained, spec.cache_dir, s3_options)
    torch.manual_seed(spec.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = open_clip.create_model(spec.image_model, pretrained=pretrained or None, weights_only=True)
        except Exception as e:
            if pretrained and Path(pretrained).is_file():  # a checkpoint file (not an open_clip tag)
                raise _refused(str(spec.image_pretrained), pretrained, e) from e
            raise
    visual = model.visual.eval()
    size = visual.image_size if isinstance(visual.image_size, (tuple, list)) else (visual.image_size,) * 2
    mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    desc = {
        "family": "open_clip",
        "name": spec.image_model,
        "pretrained": spec.image_pretrained,
        "image_size": int(size[0]),
        "mean": list(map(float, mean)),
        "std": list(map(float, std)),
        "config": open_clip.get_model_config(spec.image_model),
    }
    return visual, desc


def build_audio_model(
    spec: ModelSpec, s3_options: typing.Mapping[str, typing.Any] = {}
) -> tuple[torch.nn.Module, dict]:
    """openai-whisper's AudioEncoder with the checkpoint's encoder weights, and a description."""
    from whisper.model import AudioEncoder

    if spec.audio_checkpoint:
        path = local_checkpoint(spec.audio_checkpoint, spec.cache_dir, s3_options)
        payload = _load_state_dict(path, spec.audio_checkpoint)
        if "model_state_dict" in payload:  # the openai checkpoint layout
            dims, state = dict(payload["dims"]), payload["model_state_dict"]
        else:
            if spec.audio_model not in WHISPER_DIMS:
                raise ValueError(f"{path}: a bare state dict needs a known audio_model size, not {spec.audio_model!r}")
            dims, state = WHISPER_DIMS[spec.audio_model], payload
        known = WHISPER_DIMS.get(spec.audio_model)
        if known is not None and spec.audio_model != RANDOM_AUDIO_MODEL:
            enc_keys = ("n_mels", "n_audio_state", "n_audio_head", "n_audio_layer")
            if any(int(dims[k]) != known[k] for k in enc_keys):
                raise ValueError(f"{path} holds a Whisper encoder with dims {dims}, not Whisper {spec.audio_model!r}")
    else:
        if spec.audio_model != RANDOM_AUDIO_MODEL and spec.audio_model not in WHISPER_DIMS:
            raise ValueError(f"unknown Whisper size {spec.audio_model!r}; known: {sorted(WHISPER_DIMS)}")
        dims, state = WHISPER_DIMS[spec.audio_model], None
    torch.manual_seed(spec.seed + 1)  # random weights depend on the seed only
    encoder = AudioEncoder(
        dims["n_mels"], dims["n_audio_ctx"], dims["n_audio_state"], dims["n_audio_head"], dims["n_audio_layer"]
    )
    if state is not None:
        enc_state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        if not enc_state:
            raise ValueError(f"{spec.audio_checkpoint}: no encoder.* weights in the checkpoint")
        encoder.load_state_dict(enc_state, strict=True)
    desc = {
        "family": "openai-whisper",
        "name": spec.audio_model,
        "checkpoint": spec.audio_checkpoint,
        "dims": {k: int(v) for k, v in dims.items()},
    }
    return encoder.eval(), desc


class ContentEncoders:
    """Both towers on one device, with batch embedding functions and the fingerprint."""

    def __init__(self, spec: ModelSpec, s3_options: typing.Mapping[str, typing.Any] = {}):
        self.spec = spec
        self.device = resolve_device(spec.device)
        self.visual, self.image_desc = build_image_model(spec, s3_options)
        self.audio, self.audio_desc = build_audio_model(spec, s3_options)
        self.visual.to(self.device)
        self.audio.to(self.device)
        self.random_weights = {"image": spec.image_pretrained is None, "audio": spec.audio_checkpoint is None}
        self.image_size = self.image_desc["image_size"]
        self.n_mels = self.audio_desc["dims"]["n_mels"]
        self._mean = torch.tensor(self.image_desc["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.image_desc["std"], device=self.device).view(1, 3, 1, 1)
        with torch.no_grad():
            probe = self.visual(torch.zeros(1, 3, self.image_size, self.image_size, device=self.device))
        self.image_dim = int(probe.shape[-1])
        self.audio_dim = int(self.audio_desc["dims"]["n_audio_state"])
        self.decode_params = DecodeParams(n_frames=spec.n_frames, size=self.image_size, max_audio_s=spec.max_audio_s)
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        arch = {
            "image": {k: v for k, v in self.image_desc.items() if k != "pretrained"},
            "audio": {k: v for k, v in self.audio_desc.items() if k != "checkpoint"},
            "decode": dataclasses.asdict(self.decode_params),
        }
        h.update(json.dumps(arch, sort_keys=True, default=str).encode())
        h.update(weights_digest(self.visual).encode())
        h.update(weights_digest(self.audio).encode())
        return h.hexdigest()[:20]

    def describe(self) -> dict[str, typing.Any]:
        return {
            "fingerprint": self.fingerprint,
            "image_model": {k: v for k, v in self.image_desc.items() if k != "config"},
            "audio_model": self.audio_desc,
            "random_weights": self.random_weights,
            "device": str(self.device),
            "n_frames": self.spec.n_frames,
        }

    def _autocast(self) -> typing.ContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    @torch.no_grad()
    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """(B, N, S, S, 3) uint8 -> (B, N, D) float32 per-frame embeddings, each L2-normalised."""
        b, n = frames.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = x.reshape(b * n, *frames.shape[2:]).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = torch.nn.functional.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        x = (x - self._mean) / self._std
        with self._autocast():
            feats = self.visual(x)
        feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.reshape(b, n, -1).cpu().numpy()

    @torch.no_grad()
    def embed_audio(self, clips: typing.Sequence[np.ndarray]) -> np.ndarray:
        """16 kHz mono clips -> (B, D) float32: Whisper log-mel (30-s window), the encoder, mean over
        the tokens that cover real audio (not the padding), L2-normalised."""
        from whisper.audio import N_SAMPLES, N_SAMPLES_PER_TOKEN, log_mel_spectrogram, pad_or_trim

        if not clips:
            return np.zeros((0, self.audio_dim), dtype=np.float32)
        # the real samples of every clip (at most 30 s) go to the models' device in one copy, unpadded;
        # padding and the STFTs happen there (on a GPU they cost this process no CPU)
        lengths = [min(len(c), N_SAMPLES) for c in clips]
        joined = torch.from_numpy(
            np.concatenate([np.asarray(c[:n], dtype=np.float32) for c, n in zip(clips, lengths)])
        ).to(self.device)
        mels = [
            # one clip at a time: log_mel_spectrogram clamps against the max of its whole input
            log_mel_spectrogram(pad_or_trim(a), n_mels=self.n_mels, device=self.device)
            for a in torch.split(joined, lengths)
        ]
        real_tokens = [max(1, math.ceil(n / N_SAMPLES_PER_TOKEN)) for n in lengths]
        x = torch.stack(mels)
        with self._autocast():
            h = self.audio(x)
        h = h.float()
        tokens = torch.tensor(real_tokens, device=self.device)
        mask = (torch.arange(h.shape[1], device=self.device)[None, :] < tokens[:, None]).float()
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()


_LOADED: dict[tuple, ContentEncoders] = {}


def load_encoders(spec: ModelSpec, s3_options: typing.Mapping[str, typing.Any] = {}) -> ContentEncoders:
    """One :class:`ContentEncoders` per spec per process (loading and hashing a ViT-B takes seconds)."""
    key = (spec, tuple(sorted(s3_options.items())))
    if key not in _LOADED:
        _LOADED[key] = ContentEncoders(spec, s3_options)
    return _LOADED[key]

"""Frozen OpenCLIP backbones: one factory, the text projection W and the pooled EOS token."""
from __future__ import annotations

import contextlib
import logging
import copy
import hashlib
import os
import socket
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import open_clip
import torch
from torch import nn

from .errors import ModelError
from .logs import quiet_root_logger

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)

RANDOM = "none"
RANDOM_WARNING = (
    "WARNING: RANDOM WEIGHTS (--pretrained none). The model has not been trained; "
    "every accuracy it reports is meaningless. Use it for smoke tests only."
)


WEIGHTS_HINT = (
    "pass --pretrained PATH to a local checkpoint file (e.g. open_clip_pytorch_model.bin), or make a smoke test "
    "with --model semobridge-tiny --pretrained none (random weights, results meaningless)"
)


class BackboneError(ModelError):
    """The backbone cannot be loaded or is not a CLIP-style model."""


def best_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Backbone:
    """A frozen OpenCLIP model with what SeMoBridge needs from it."""

    model: nn.Module
    name: str
    pretrained: str
    weights_hash: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    preprocess: object  # open_clip's PIL eval transform
    tokenizer: object
    device: torch.device

    @property
    def is_random(self) -> bool:
        return self.pretrained == RANDOM

    @property
    def text_projection(self) -> torch.Tensor:
        """W [d_t, d]: pooled EOS (after ln_final) -> joint space."""
        _, proj = _text_projection_owner(self.model)
        return (proj.weight.t() if isinstance(proj, nn.Linear) else proj).detach().float()

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    @property
    def embed_dim(self) -> int:
        return int(self.text_projection.shape[1])

    def identity(self) -> dict[str, str]:
        """What a fitted model records about the backbone it was fitted on."""
        return {"name": self.name, "pretrained": self.pretrained, "weights_hash": self.weights_hash}

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image embeddings after the visual projection, NOT normalised: [N, d] float32."""
        return self.model.encode_image(pixels.to(self.device)).float()

    @torch.no_grad()
    def encode_text_eos(self, texts: Sequence[str]) -> torch.Tensor:
        """Pooled end-of-sequence tokens after ln_final, before W: [M, d_t] float32."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        return without_text_projection(self.model).encode_text(tokens).float()


def _text_projection_owner(model: nn.Module) -> tuple[nn.Module, torch.Tensor | nn.Linear]:
    """The module holding a CLIP-style (linear, bias-free) text projection, and the projection."""
    for owner in (model, getattr(model, "text", None)):
        proj = getattr(owner, "text_projection", None) if owner is not None else None
        if isinstance(proj, torch.Tensor) and proj.ndim == 2:
            return owner, proj
        if isinstance(proj, nn.Linear) and proj.bias is None:
            return owner, proj
    raise BackboneError(
        f"{type(model).__name__} has no CLIP-style text projection (a bias-free linear map from the "
        "pooled EOS token to the joint space); SeMoBridge needs one. Use a CLIP model with an "
        "open_clip text transformer (e.g. ViT-B-16, RN50), not an HF/timm text tower."
    )


def without_text_projection(model: nn.Module) -> nn.Module:
    """A shallow copy of the model whose encode_text stops at the pooled EOS token (open_clip's own
    pooling rule included). The model itself is not touched, so this is safe across threads."""
    owner, proj = _text_projection_owner(model)
    clone = copy.copy(model)
    target = clone if owner is model else copy.copy(owner)
    if target is not clone:
        clone._modules = {**model._modules, "text": target}
    if isinstance(proj, nn.Linear):
        target._modules = {**owner._modules, "text_projection": None}
    else:
        target._parameters = {**owner._parameters, "text_projection": None}
    return clone


def _reachable(url: str, timeout: float) -> bool:
    """Whether a TCP connection to the URL's host opens within `timeout` seconds."""
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline_unless_reachable(timeout: float = 3.0) -> Iterator[str | None]:
    """Hugging Face hub's offline mode while its endpoint does not answer, so that weights that are
    not in the local cache fail at once instead of after a minute of retries. Yields why the hub
    is offline (None when it is online)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield None
        return
    if constants.HF_HUB_OFFLINE:
        yield "HF_HUB_OFFLINE is set"
    elif _reachable(constants.ENDPOINT, timeout):
        yield None
    else:
        constants.HF_HUB_OFFLINE = True
        try:
            yield f"{constants.ENDPOINT} does not answer"
        finally:
            constants.HF_HUB_OFFLINE = False


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def weights_hash(model: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of the state dict: names, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _transform_geometry(preprocess) -> tuple[int, tuple, tuple]:
    """Image size, mean and std from open_clip's eval transform."""
    size, mean, std = None, None, None
    for t in getattr(preprocess, "transforms", []):
        if type(t).__name__ == "CenterCrop":
            size = t.size[0] if isinstance(t.size, (tuple, list)) else t.size
        if type(t).__name__ == "Normalize":
            mean, std = tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
    if size is None or mean is None:
        raise BackboneError("could not read image size, mean and std from the model's preprocessing")
    return int(size), mean, std


def load_backbone(
    name: str,
    pretrained: str | os.PathLike | None = "openai",
    device: str | torch.device | None = None,
    seed: int = 0,
) -> Backbone:
    """Load a frozen OpenCLIP backbone.

    `name` is an open_clip model name (``ViT-B-16``, ``RN50``, ``semobridge-tiny``) or
    ``local-dir:/path``. `pretrained` is an open_clip tag (``openai``; downloads when online),
    a local checkpoint file, or ``none`` for seeded random weights (tests and latency only).
    """
    device = torch.device(device) if device is not None else best_device()
    pretrained = RANDOM if pretrained in (None, "", RANDOM) else str(pretrained)
    is_local_dir = name.startswith("local-dir:")
    if not is_local_dir and name not in open_clip.list_models():
        raise BackboneError(
            f"unknown model {name!r}. Known: {', '.join(open_clip.list_models()[:12])}, ... "
            "(see open_clip.list_models()), or 'local-dir:/path/to/dir' with open_clip_config.json."
        )
    if pretrained != RANDOM and not is_local_dir and Path(pretrained).suffix and not Path(pretrained).exists():
        raise BackboneError(f"checkpoint file {pretrained} does not exist", hint=WEIGHTS_HINT)
    torch.manual_seed(seed)
    downloads = pretrained != RANDOM and not is_local_dir and not Path(pretrained).exists()
    offline = None
    try:
        # open_clip logs "initialized randomly" and download failures to the root logger; our own
        # warning and error say it once, louder
        with quiet_root_logger(logging.CRITICAL), (_hub_offline_unless_reachable() if downloads else contextlib.nullcontext()) as offline:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=None if (pretrained == RANDOM or is_local_dir) else pretrained,
                load_weights=pretrained != RANDOM,
                device=device,
            )
    except Exception as exc:  # open_clip raises many kinds; all mean "could not get the weights"
        why = f"the weights are not in the local Hugging Face cache and {offline}" if offline else _first_line(exc)
        raise BackboneError(
            f"could not load {name} with pretrained={pretrained!r}: {why}",
            hint="offline (or with HF_HUB_OFFLINE=1) the weights must already be in the Hugging Face cache; " + WEIGHTS_HINT,
        ) from exc
    model.eval().requires_grad_(False)
    _text_projection_owner(model)  # fail early on towers without a text projection
    size, mean, std = _transform_geometry(preprocess)
    if pretrained == RANDOM:
        warnings.warn(RANDOM_WARNING, stacklevel=2)
    return Backbone(
        model=model,
        name=name,
        pretrained=pretrained if pretrained == RANDOM or not Path(pretrained).exists() else str(Path(pretrained).resolve()),
        weights_hash=weights_hash(model),
        image_size=size,
        mean=mean,
        std=std,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(name),
        device=device,
    )

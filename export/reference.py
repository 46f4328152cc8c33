"""Reference outputs: an exported graph in a plain ONNX Runtime session, and the library itself."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from semobridge.backbones import Backbone
from semobridge.model import SeMoBridge
from semobridge_runtime.backends.session import CPU, SessionSettings, open_session, ort


def session(onnx_path: str | os.PathLike | ort.InferenceSession) -> ort.InferenceSession:
    """A CPU ONNX Runtime session (an existing session is returned as is)."""
    if isinstance(onnx_path, ort.InferenceSession):
        return onnx_path
    return open_session(Path(onnx_path), SessionSettings(CPU))


def reference_scores(onnx_path: str | os.PathLike | ort.InferenceSession, images: np.ndarray) -> dict[str, np.ndarray]:
    """All outputs (scores, label, embedding) of an exported graph for a batch of inputs.

    `images`: uint8 [N, H, W, 3] RGB for a uint8 graph, normalised float32 [N, 3, S, S] for a float one.
    """
    sess = session(onnx_path)
    name = sess.get_inputs()[0].name
    outputs = sess.run(None, {name: np.ascontiguousarray(images)})
    return {o.name: value for o, value in zip(sess.get_outputs(), outputs)}


@torch.no_grad()
def library_scores(head: SeMoBridge, backbone: Backbone, images: np.ndarray | list[np.ndarray]) -> dict[str, np.ndarray]:
    """What the library computes: open_clip's PIL preprocessing per image, the encoder, the head."""
    pixels = torch.stack([backbone.preprocess(Image.fromarray(np.asarray(im))) for im in images])
    q = backbone.encode_image(pixels).cpu()
    scores = head.cpu()(q)
    return {
        "scores": scores.numpy(),
        "label": scores.argmax(-1).numpy(),
        "embedding": torch.nn.functional.normalize(q, dim=-1).numpy(),
    }


def synthetic_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random RGB images uint8 [H, W, 3] of varied sizes (when no real images are at hand)."""
    g = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(n):
        h, w = (int(v) for v in torch.randint(48, 320, (2,), generator=g))
        low = torch.rand(1, 3, 5, 7, generator=g)
        img = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
        img = img + 0.04 * torch.randn(1, 3, h, w, generator=g)
        images.append((img.clamp(0, 1)[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    return images


def text_drift(reference: str | os.PathLike, candidate: str | os.PathLike, names: tuple[str, ...] = ("dog", "red fox", "tabby cat")) -> float:
    """Smallest cosine similarity between two text towers' pooled EOS tokens over CLIP's ensemble
    prompts of a few class names (e.g. the int8 tower against the fp32 one)."""
    from open_clip.tokenizer import tokenize

    from semobridge.prompts import ENSEMBLE_TEMPLATES

    ref, cand = session(reference), session(candidate)
    tokens = tokenize([t.format(n) for n in names for t in ENSEMBLE_TEMPLATES], context_length=ref.get_inputs()[0].shape[1])
    a, b = (s.run(None, {"tokens": tokens.numpy()})[0] for s in (ref, cand))
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())

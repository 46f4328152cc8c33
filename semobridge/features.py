"""The embeddings contract (FEATURES.npz): what a fit needs, with or without images."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


class FeatureError(ValueError):
    """FEATURES.npz (or features computed from images) cannot be fitted."""


@dataclass
class FeatureSet:
    """CLIP embeddings of prompts, few-shot images and (optionally) validation images."""

    text_projection: torch.Tensor  # W [d_t, d]
    text_eos: torch.Tensor  # [M, d_t] pooled EOS before W, one row per prompt
    text_class: torch.Tensor  # int64 [M]
    shot_image: torch.Tensor  # [N, d] after the visual projection, not normalised
    shot_label: torch.Tensor  # int64 [N]
    val_image: torch.Tensor | None = None
    val_label: torch.Tensor | None = None
    logit_scale: float = 100.0
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_val(self) -> bool:
        return self.val_image is not None and len(self.val_image) > 0

    @property
    def shots(self) -> float:
        """Mean number of few-shot embeddings per class."""
        return len(self.shot_label) / self.num_classes

    def to(self, device: torch.device | str) -> "FeatureSet":
        """A copy with every tensor on `device`."""
        move = lambda t: t.to(device) if t is not None else None  # noqa: E731
        return FeatureSet(
            move(self.text_projection), move(self.text_eos), move(self.text_class), move(self.shot_image),
            move(self.shot_label), move(self.val_image), move(self.val_label), self.logit_scale, list(self.class_names),
        )

    def validate(self) -> None:
        """Check shapes, labels and values; a clear FeatureError naming the key otherwise."""
        W = self.text_projection
        if W.ndim != 2:
            raise FeatureError(f"text_projection must be [d_t, d], got shape {tuple(W.shape)}")
        d_t, d = W.shape
        _width("text_eos", self.text_eos, d_t, "d_t (text_projection rows)")
        _width("shot_image", self.shot_image, d, "d (text_projection columns)")
        _labels("text_class", self.text_class, len(self.text_eos), "text_eos")
        _labels("shot_label", self.shot_label, len(self.shot_image), "shot_image")
        if (self.val_image is None) != (self.val_label is None):
            raise FeatureError("val_image and val_label go together: give both or neither")
        if self.val_image is not None:
            _width("val_image", self.val_image, d, "d (text_projection columns)")
            _labels("val_label", self.val_label, len(self.val_image), "val_image")
        C = int(max(self.text_class.max(), self.shot_label.max())) + 1
        if not self.class_names:
            self.class_names = [f"class_{i}" for i in range(C)]
        C = len(self.class_names)
        _names(self.class_names)
        for key, labels in (("text_class", self.text_class), ("shot_label", self.shot_label), ("val_label", self.val_label)):
            if labels is None:
                continue
            if labels.numel() and (labels.min() < 0 or labels.max() >= C):
                raise FeatureError(f"{key} has labels outside 0..{C - 1} ({C} classes)")
        for key, labels in (("text_class", self.text_class), ("shot_label", self.shot_label)):
            missing = sorted(set(range(C)) - set(labels.tolist()))
            if missing:
                names = ", ".join(repr(self.class_names[i]) for i in missing[:5])
                raise FeatureError(f"{key}: {len(missing)} class(es) have no rows ({names}); every class needs prompts and shots")
        if not np.isfinite(self.logit_scale) or self.logit_scale <= 0:
            raise FeatureError(f"logit_scale must be a positive number (after exp), got {self.logit_scale}")

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSet":
        """Read FEATURES.npz (keys in the README's contract)."""
        path = Path(path)
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise FeatureError(f"cannot read {path} as .npz: {exc}") from exc
        required = ["text_projection", "text_eos", "text_class", "shot_image", "shot_label"]
        missing = [k for k in required if k not in z.files]
        if missing:
            raise FeatureError(f"{path} lacks the key(s) {', '.join(missing)}; required: {', '.join(required)}")
        get = lambda k: z[k] if k in z.files else None  # noqa: E731
        names = get("class_names")
        return cls(
            text_projection=_float(z["text_projection"]),
            text_eos=_float(z["text_eos"]),
            text_class=_int(z["text_class"]),
            shot_image=_float(z["shot_image"]),
            shot_label=_int(z["shot_label"]),
            val_image=_float(get("val_image")) if get("val_image") is not None else None,
            val_label=_int(get("val_label")) if get("val_label") is not None else None,
            logit_scale=float(get("logit_scale")) if get("logit_scale") is not None else 100.0,
            class_names=[str(n) for n in names] if names is not None else [],
        )

    def save(self, path: str | Path) -> None:
        """Write FEATURES.npz."""
        arrays = {
            "text_projection": self.text_projection, "text_eos": self.text_eos, "text_class": self.text_class,
            "shot_image": self.shot_image, "shot_label": self.shot_label,
        }
        if self.has_val:
            arrays.update(val_image=self.val_image, val_label=self.val_label)
        out = {k: v.cpu().numpy() for k, v in arrays.items()}
        np.savez(path, **out, logit_scale=np.float32(self.logit_scale), class_names=np.array(self.class_names))


def _float(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


def _int(a: np.ndarray) -> torch.Tensor:
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise FeatureError(f"labels must be integers, got dtype {a.dtype}")
    return torch.from_numpy(a.astype(np.int64))


def _width(key: str, x: torch.Tensor, width: int, what: str) -> None:
    if x.ndim != 2 or x.shape[1] != width:
        raise FeatureError(f"{key} has shape {tuple(x.shape)}, expected [rows, {width}] to match {what}")
    if len(x) == 0:
        raise FeatureError(f"{key} is empty")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise FeatureError(f"{key} has NaN or inf in {bad} row(s); re-encode those images or drop them")


def _labels(key: str, labels: torch.Tensor, rows: int, of: str) -> None:
    if labels.ndim != 1 or len(labels) != rows:
        raise FeatureError(f"{key} has shape {tuple(labels.shape)}, expected [{rows}] (one label per row of {of})")


def _names(names: list[str]) -> None:
    empty = [i for i, n in enumerate(names) if not n.strip()]
    if empty:
        raise FeatureError(f"class name(s) at index {empty[:5]} are empty; give every class a name")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise FeatureError(f"duplicate class name {n!r} (classes {seen[n]} and {i}); class names must be unique")
        seen[n] = i

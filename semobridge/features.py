"""The embeddings contract (FEATURES.npz): what a fit needs, with or without images."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import zipfile

import numpy as np
import torch

from .errors import InputError
from .files import ARRAY_BYTES, check_regular
from .validate import MIN_FIT_CLASSES
from .validate import class_names as check_class_names


class FeatureError(InputError):
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

    def check_backbone(self, backbone, source: str = "the features") -> None:
        """Refuse features whose text projection W is not the backbone's (they come from another model)."""
        W = backbone.text_projection.cpu()
        if W.shape != self.text_projection.shape or not torch.allclose(W, self.text_projection.cpu(), rtol=1e-4, atol=1e-6):
            raise FeatureError(
                f"{source}: text_projection {tuple(self.text_projection.shape)} is not the text projection of "
                f"{backbone.name} ({backbone.pretrained}, {tuple(W.shape)})",
                hint="give the --model/--pretrained the features were computed with",
            )

    def validate(self) -> None:
        """Check shapes, labels and values; a clear FeatureError naming the key otherwise."""
        W = self.text_projection
        if W.ndim != 2:
            raise FeatureError(f"text_projection must be [d_t, d], got shape {tuple(W.shape)}")
        d_t, d = W.shape
        if not torch.isfinite(W).all():
            raise FeatureError("text_projection has NaN or inf values")
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
        if len(self.class_names) < C:
            raise FeatureError(f"class_names has {len(self.class_names)} names, but the labels (text_class, shot_label) "
                               f"go up to {C - 1}: {C} classes", hint="give class_names one name per class, in label order")
        C = len(self.class_names)
        check_class_names(self.class_names, "class_names", MIN_FIT_CLASSES)
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
        with _npz(path) as z:
            required = ["text_projection", "text_eos", "text_class", "shot_image", "shot_label"]
            missing = [k for k in required if k not in z.files]
            if missing:
                raise FeatureError(f"{path} lacks the key(s) {', '.join(missing)}; required: {', '.join(required)}")
            get = lambda k: _array(z, k, path) if k in z.files else None  # noqa: E731
            names = get("class_names")
            scale = get("logit_scale")
            if scale is not None and scale.size != 1:
                raise FeatureError(f"{path}: logit_scale has shape {scale.shape}; it is one number (after exp)")
            if names is not None and names.dtype.kind not in "US":
                raise FeatureError(f"{path}: class_names has dtype {names.dtype}; it must hold strings")
            return cls(
                text_projection=_float(get("text_projection"), "text_projection", path),
                text_eos=_float(get("text_eos"), "text_eos", path),
                text_class=_int(get("text_class"), "text_class", path),
                shot_image=_float(get("shot_image"), "shot_image", path),
                shot_label=_int(get("shot_label"), "shot_label", path),
                val_image=_float(get("val_image"), "val_image", path) if "val_image" in z.files else None,
                val_label=_int(get("val_label"), "val_label", path) if "val_label" in z.files else None,
                logit_scale=float(_float(scale, "logit_scale", path).reshape(())) if scale is not None else 100.0,
                class_names=[str(n) for n in names.reshape(-1)] if names is not None else [],
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


def load_queries(path: str | Path, dim: int) -> torch.Tensor:
    """Query embeddings [Nq, dim] from QUERIES.npz (key `image`), finite float32."""
    with _npz(path) as z:
        if "image" not in z.files:
            raise FeatureError(f"{path} has no key 'image' (query embeddings [Nq, d])")
        q = _float(_array(z, "image", path), "image", path)
    _width(f"{path}: 'image'", q, dim, "this model's embedding width")
    return q


def _npz(path: str | Path):
    """An open .npz archive (no pickles); one clear error for anything else."""
    path = Path(path)
    if not path.exists():
        raise FeatureError(f"{path} does not exist")
    check_regular(path, "embedding archive", ARRAY_BYTES, FeatureError)  # not a folder, FIFO or device; bounded
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FeatureError(f"{path} is not a .npz archive of arrays ({type(exc).__name__})",
                           hint="write it with numpy.savez") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise FeatureError(f"{path} holds a single array, not a .npz archive of named arrays", hint="write it with numpy.savez")
    return z


def _array(z, key: str, path: str | Path) -> np.ndarray:
    try:
        return z[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FeatureError(f"{path}: cannot read {key!r} ({exc}); object arrays and pickles are not accepted") from None


def _float(a: np.ndarray, key: str, path: str | Path) -> torch.Tensor:
    if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
        raise FeatureError(f"{path}: {key} has dtype {a.dtype}; it must hold real numbers")
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


def _int(a: np.ndarray, key: str, path: str | Path) -> torch.Tensor:
    if a.dtype.kind not in "iu":
        raise FeatureError(f"{path}: {key} has dtype {a.dtype}; labels must be integers")
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

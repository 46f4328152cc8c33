"""Class sets: the per-class tensors the fused graph takes as inputs, their edits and class files.

A class set holds, per class c, what docs/method.md's blend needs: the text classifier T_c, the
bridged prototype P_c, the image prototype I_c (unit vectors, [C, d] each) and the class KL
D_c ([C], bits). Editing returns a new set (the old one stays valid for predictions running
at the same time); the KL of every class is recomputed over the whole new set from the
softmax denominators Σ_j exp(I_c · T_j), which an edit updates (and the first edit recovers
from the KL itself), so one edit costs O(C·d) instead of a C x C product.

A class set also carries its open-set `temperature`, `threshold` and abstention `score` (semobridge_runtime.openset)
and the embeddings they were calibrated on (semobridge_runtime.calibration), which the enrolment recalibrates
after every edit. A class file is a safetensors file; docs/classes.md gives its exact byte layout.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from . import head, openset, tensorfile
from .calibration import CalibrationData
from .contract import CLASS_FILE_FORMAT as FORMAT
from .contract import CLASS_FILE_NAMES as NAMES_TENSOR
from .contract import CLASS_FILE_OPEN_SET, CLASS_FILE_SCORE
from .contract import HEAD_INPUTS as TENSORS  # per-class tensors, named as the fused graph's head inputs, in file order
from .errors import InputError, ModelError
from .names import check_name, check_names, key

if TYPE_CHECKING:
    from .metadata import ModelInfo

DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # a class file's temperature and threshold (and C's)


@dataclass(frozen=True)
class Identity:
    """What a class file must match to be used with a model: the backbone weights, the bridge's W⁺
    (prototypes are bridged with it) and the embedding width."""

    backbone: str
    weights_hash: str
    bridge_hash: str
    embedding_dim: int

    @classmethod
    def of(cls, info: ModelInfo, source: str) -> "Identity":
        """From an exported model's metadata."""
        if info.bridge_hash is None or not info.head_inputs or info.backbone is None:
            raise ModelError(f"{source} was exported before class sets existed (its classes are fixed); "
                             "re-export it with semobridge-export to add or remove classes")
        return cls(info.backbone.name, info.backbone.weights_hash, info.bridge_hash, info.embedding_dim)


def _frozen(array: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=dtype)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class ClassSet:
    """Class names and their head tensors (read-only arrays; edits return a new set)."""

    names: tuple[str, ...]
    text_classifier: np.ndarray  # T [C, d]
    bridged_prototypes: np.ndarray  # P [C, d]
    image_prototypes: np.ndarray  # I [C, d]
    class_kl: np.ndarray  # D [C], bits
    sums: np.ndarray | None = field(default=None, repr=False, compare=False)  # Σ_j exp(I_c·T_j), float64 [C]
    #: the open set of this class set (openset.decide); None: the model's calibration applies
    temperature: float | None = None
    threshold: float | None = None
    #: what they were calibrated on; None: not kept (a set from before it was stored): edits keep T and θ as they are
    calibration: CalibrationData | None = field(default=None, repr=False, compare=False)
    #: the abstention score θ applies to (openset.SCORES), chosen with T and θ
    score: str = openset.SCORE

    def __post_init__(self) -> None:
        for name in TENSORS:
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        C, shapes = len(self.names), [getattr(self, n).shape for n in TENSORS]
        if [len(s) for s in shapes] != [2, 2, 2, 1] or len({s[1] for s in shapes[:3]}) != 1 or any(s[0] != C for s in shapes):
            raise ModelError(f"class tensors of shapes {shapes} do not fit {C} classes")
        if (self.temperature is None) != (self.threshold is None):
            raise ModelError("a class set has both an open-set temperature and a threshold, or neither")
        if self.temperature is not None:
            openset.OpenSet(self.temperature, self.threshold, score=self.score)  # their ranges (ModelError, InputError)

    def is_name_only(self, name: str) -> bool:
        """Whether class `name` was enrolled from its name alone (stand-in prototypes; known only where the set keeps
        its calibration data, which holds every class's shots)."""
        return self.calibration is not None and self.calibration.shots_of(self.index(name)) == 0

    def __len__(self) -> int:
        return len(self.names)

    @property
    def embedding_dim(self) -> int:
        return int(self.text_classifier.shape[1])

    def feeds(self) -> dict[str, np.ndarray]:
        """The fused graph's head inputs."""
        return {name: getattr(self, name) for name in TENSORS}

    def index(self, name: str) -> int:
        if name not in self.names:
            near = [n for n in self.names if key(n) == key(str(name))]
            hint = f"; did you mean {near[0]!r}?" if near else f"; the classes are: {', '.join(self.names[:20])}" + (
                ", ..." if len(self.names) > 20 else "")
            raise InputError(f"there is no class named {name!r}{hint}")
        return self.names.index(name)

    def _sums(self) -> np.ndarray:
        """The softmax denominators of the class KL: kept from the last edit, else recovered from the KL."""
        if self.sums is not None:
            return self.sums
        found = head.sums_from_kl(self.image_prototypes, self.text_classifier, self.class_kl)
        return found if found is not None else head.affinity_sums(self.image_prototypes, self.text_classifier)

    def added(self, name: str, text_classifier: np.ndarray, bridged_prototype: np.ndarray, image_prototype: np.ndarray,
              shots: tuple[np.ndarray, np.ndarray] | None = None) -> "ClassSet":
        """This set with one more class at the end; every class's KL recomputed, in O(C·d). `shots`: the features
        F [K, d] and bridged features [K, d] its prototypes came from (kept with the calibration data; None: a
        class from its name). The temperature and threshold are kept as they were (Enrolment recalibrates)."""
        check_name(name, self.names)
        T = np.vstack([self.text_classifier, text_classifier[None].astype(np.float32)])
        I = np.vstack([self.image_prototypes, image_prototype[None].astype(np.float32)])
        P = np.vstack([self.bridged_prototypes, bridged_prototype[None].astype(np.float32)])
        column, row = (np.exp(a.astype(np.float64)) for a in (I[:-1] @ T[-1], T @ I[-1]))
        sums = np.append(self._sums() + column, row.sum())
        data = self.calibration
        if data is not None and shots is not None:
            data = data.with_shots(len(self), *shots)
        return ClassSet((*self.names, name), T, P, I, head.class_kl(I, T, sums), sums, self.temperature, self.threshold, data,
                        self.score)

    def upgraded(self, name: str, text_classifier: np.ndarray, bridged_prototype: np.ndarray, image_prototype: np.ndarray,
                 shots: tuple[np.ndarray, np.ndarray]) -> "ClassSet":
        """This set with class `name` (enrolled from its name alone) given the prototypes of its shots (features and
        bridged features [K, d]) and `text_classifier`, in its place; every class's KL recomputed, in O(C·d)."""
        r = self.index(name)
        if not self.is_name_only(name):
            raise InputError(f"there is already a class named {name!r} (enrolled from images)",
                             hint="choose another name, or remove that class first")
        T, P, I = (np.array(a, np.float32) for a in (self.text_classifier, self.bridged_prototypes, self.image_prototypes))
        old_t = T[r].copy()
        T[r], P[r], I[r] = text_classifier, bridged_prototype, image_prototype
        sums = self._sums() + np.exp((I @ T[r]).astype(np.float64)) - np.exp((I @ old_t).astype(np.float64))
        sums[r] = np.exp((T @ I[r]).astype(np.float64)).sum()
        data = self.calibration.with_shots(r, *shots)  # is_name_only: there is calibration data
        return ClassSet(self.names, T, P, I, head.class_kl(I, T, sums), sums, self.temperature, self.threshold, data, self.score)

    def removed(self, name: str) -> "ClassSet":
        """This set without class `name`; every remaining class's KL recomputed, in O(C·d)."""
        r = self.index(name)
        if len(self) == 1:
            raise InputError(f"{name!r} is the last class; a model needs at least one: add another class first")
        keep = np.arange(len(self)) != r
        sums = (self._sums() - np.exp((self.image_prototypes @ self.text_classifier[r]).astype(np.float64)))[keep]
        T, I = self.text_classifier[keep], self.image_prototypes[keep]
        names = tuple(n for n in self.names if n != name)
        data = self.calibration.without(r) if self.calibration is not None else None
        return ClassSet(names, T, self.bridged_prototypes[keep], I, head.class_kl(I, T, sums), sums, self.temperature,
                        self.threshold, data, self.score)

    def renamed(self, old: str, new: str) -> "ClassSet":
        """This set with class `old` called `new` (its tensors unchanged)."""
        r = self.index(old)
        check_name(new, self.names[:r] + self.names[r + 1:])
        return replace(self, names=(*self.names[:r], new, *self.names[r + 1:]))

    # ------------------------------------------------------------------ class files

    def to_bytes(self, identity: Identity) -> bytes:
        """The class file (docs/classes.md)."""
        meta = {
            "format": FORMAT, "backbone": identity.backbone, "weights_hash": identity.weights_hash,
            "bridge_hash": identity.bridge_hash, "num_classes": str(len(self)), "embedding_dim": str(self.embedding_dim),
        }
        if self.temperature is not None:  # repr: the shortest decimal that reads back as the same float64 (C: strtod)
            meta.update(temperature=repr(float(self.temperature)), threshold=repr(float(self.threshold)),
                        **{CLASS_FILE_SCORE: self.score})
        names = np.frombuffer("\n".join(self.names).encode("utf-8"), np.uint8)
        calibration = self.calibration.tensors() if self.calibration is not None else {}
        return tensorfile.encode({**self.feeds(), NAMES_TENSOR: names, **calibration}, meta)

    def save(self, path: str | os.PathLike, identity: Identity) -> None:
        """Write the class file under the output rule (files.atomic_output): atomic, only a regular writable
        file is replaced and it keeps its mode; on failure the old file stays as it was."""
        tensorfile.write_atomic(path, self.to_bytes(identity), "class file")

    @classmethod
    def load(cls, path: str | os.PathLike, identity: Identity) -> "ClassSet":
        """Read a class file and check it against the model's identity (ModelError if it does not fit)."""
        tensors, meta = tensorfile.read(path, "class file")
        source = f"class file {path}"
        if meta.get("format") != FORMAT:
            raise ModelError(f"{source} is not a semobridge class file (format {meta.get('format')!r}, expected {FORMAT!r}); "
                             "write one with Classifier.save_classes or semobridge-classes")
        if meta.get("weights_hash") != identity.weights_hash:
            raise ModelError(f"{source} was made for the backbone {meta.get('backbone')!r} with weights "
                             f"{meta.get('weights_hash')}, but this model's backbone is {identity.backbone!r} with weights "
                             f"{identity.weights_hash}; enrol the classes again with this model")
        if meta.get("bridge_hash") != identity.bridge_hash:
            raise ModelError(f"{source} was bridged with another W+ (bridge {meta.get('bridge_hash')}, this model's: "
                             f"{identity.bridge_hash}; a SeMoBridge-T model and a training-free one differ); "
                             "enrol the classes again with this model")
        missing = [n for n in (*TENSORS, NAMES_TENSOR) if n not in tensors]
        if missing:
            raise ModelError(f"{source} lacks the tensor(s) {', '.join(missing)}; write it again")
        try:
            names = tuple(check_names(bytes(tensors[NAMES_TENSOR]).decode("utf-8").split("\n"), "the class names"))
        except UnicodeDecodeError as exc:  # a lone surrogate, too (as the C reader says it)
            raise ModelError(f"{source} has unusable class names (not UTF-8 at byte {exc.start}); write it again") from None
        except InputError as exc:
            raise ModelError(f"{source} has unusable class names ({exc}); write it again") from exc
        classes = cls(names, *(tensors[n] for n in TENSORS))
        if classes.embedding_dim != identity.embedding_dim:
            raise ModelError(f"{source} has {classes.embedding_dim}-wide prototypes; this model's are {identity.embedding_dim}")
        data = CalibrationData.of(tensors, len(names), identity.embedding_dim, source)
        return replace(classes, calibration=data, **open_set_of(meta, source))  # NaN, infinities: refused by tensorfile.read


def open_set_of(meta: dict[str, str], source: str) -> dict[str, float | str | None]:
    """The `temperature`, `threshold` and `score` of a class file's metadata (temperature and threshold both None
    when it has neither: a file written before class sets carried them; the model's calibration then applies).
    The score: absent, "max_probability" (files written before the choice); else exactly one of openset.SCORES."""
    score = meta.get(CLASS_FILE_SCORE, openset.SCORE)
    if score not in openset.SCORES:
        raise ModelError(f"{source} has an unusable open-set calibration (its {CLASS_FILE_SCORE} {score!r:.40} is not one "
                         f"of {', '.join(openset.SCORES)})", hint="write it again with Classifier.save_classes or semobridge-classes")
    given = [k for k in CLASS_FILE_OPEN_SET if k in meta]
    if not given:
        return {"temperature": None, "threshold": None, "score": openset.SCORE}
    try:
        if len(given) != 2:
            raise ValueError(f"it has a {given[0]} but no {({'temperature', 'threshold'} - set(given)).pop()}")
        bad = [k for k in given if not DECIMAL.fullmatch(meta[k])]
        if bad:
            raise ValueError(f"{bad[0]} {meta[bad[0]]!r:.40} is not a decimal number")
        t, h = float(meta["temperature"]), float(meta["threshold"])
        openset.OpenSet(t, h)
    except (ValueError, InputError, ModelError) as exc:
        raise ModelError(f"{source} has an unusable open-set calibration ({exc})",
                         hint="write it again with Classifier.save_classes or semobridge-classes") from None
    return {"temperature": t, "threshold": h, "score": score}

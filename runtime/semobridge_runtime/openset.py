"""The open-set decision: calibrated probabilities, the abstention score and "unknown" (docs/method.md).

The definition, from the blend scores z [N, C] alone (the library's fit calibrates its constants):

- probabilities = softmax(z / T), T fitted on validation by negative log-likelihood;
- the abstention score is one of SCORES, chosen per model by the fit: the top class's calibrated probability
  max_c softmax(z / T)_c, or Maximum Concept Matching (MCM, Ming et al., 2022) max_c softmax(n(q)·T_c / MCM_TAU)_c
  on the image-text cosines; the graph computes (1 - w)·max probability + w·MCM, fed w = mcm_weight(score);
- an image is known when its score >= the threshold (calibrated so that a chosen fraction of
  held-out known images is accepted); an unknown image gets label -1.

The exported graph computes it (export/fused.py: outputs probabilities and known, fed T and the
threshold), so every front-end (this runtime, C, semobridge-serve, Triton) reads one answer; `decide`
here is its reference (tests/runtime/test_front_ends.py checks each front-end against it), and what
evaluation, video smoothing and graphs exported before the decision use.

Also here, for the fit and for evaluation: the temperature fit, the expected calibration error,
the threshold at an acceptance rate, AUROC and the false-positive rate at a true-positive rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError, ModelError

SCORE = "max_probability"  # the abstention score of models and class files that name none
SCORES = ("max_probability", "mcm")  # the abstention scores a model may choose (benchmarks/open_set.py compares more)
MCM_TAU = 1.0  # MCM's temperature on the cosines (Ming et al., 2022)
UNKNOWN = -1  # the label of an unknown image
ACCEPT = 0.95  # the default operating point: this fraction of held-out known images is accepted
TEMPERATURE_RANGE = (1e-3, 1e3)
ECE_BINS = 15
THRESHOLD_OFF = 0.0  # the threshold fed for unknown=None: every top probability is >= 0, every image known


def probabilities(scores: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(z / T) along the classes, float32 [N, C] (rows sum to 1)."""
    z = np.asarray(scores, np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def abstention_score(probs: np.ndarray) -> np.ndarray:
    """The top class's calibrated probability [N] (SCORE "max_probability")."""
    return probs.max(axis=1)


def mcm(text_cosines: np.ndarray) -> np.ndarray:
    """Maximum Concept Matching [N]: max_c softmax(n(q)·T_c / MCM_TAU)_c from the image-text cosines [N, C]."""
    return abstention_score(probabilities(text_cosines, MCM_TAU))


def mcm_weight(score: str) -> float:
    """The graph's MCM_WEIGHT input for an abstention score: 0.0 max_probability, 1.0 mcm."""
    return float(SCORES.index(score))


def open_set_score(probs: np.ndarray, text_cosines: np.ndarray | None, score: str) -> np.ndarray:
    """The abstention score `score` [N] (float32) from the calibrated probabilities [N, C] and, for "mcm", the
    image-text cosines [N, C]; the graph's OPEN_SET_SCORE output is (1 - w)·max probability + w·MCM."""
    if score == "mcm":
        if text_cosines is None:
            raise ValueError("the MCM score needs the image-text cosines")
        return mcm(text_cosines).astype(np.float32)
    return abstention_score(probs).astype(np.float32)


@dataclass(frozen=True)
class OpenSet:
    """The calibration a model carries (metadata "open_set"): temperature, threshold and how they were found."""

    temperature: float
    threshold: float  # on `score`, in [0, 1]
    accept: float = ACCEPT  # the target acceptance of known images the threshold was calibrated for
    source: str = ""  # which images calibrated it
    score: str = SCORE  # the abstention score (one of SCORES) the threshold applies to

    def __post_init__(self) -> None:
        t, h = self.temperature, self.threshold
        if not (isinstance(t, (int, float)) and not isinstance(t, bool) and TEMPERATURE_RANGE[0] <= t <= TEMPERATURE_RANGE[1]):
            raise ModelError(f"open-set temperature {t!r} is outside {TEMPERATURE_RANGE}", hint="re-export the model")
        check_threshold(h, "the calibrated threshold")
        if self.score not in SCORES:
            raise ModelError(f"open-set score {self.score!r} is not one of {SCORES}", hint="re-export the model, or update semobridge-runtime")

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "temperature": float(self.temperature), "threshold": float(self.threshold),
                "accept": float(self.accept), "source": self.source}

    @classmethod
    def from_dict(cls, values: Any, source: str) -> "OpenSet":
        """From metadata; ModelError when it is not one this runtime understands."""
        try:
            if values.get("score") not in SCORES:
                raise ValueError(f"score {values.get('score')!r}, this runtime knows {SCORES}")
            return cls(float(values["temperature"]), float(values["threshold"]), float(values.get("accept", ACCEPT)),
                       str(values.get("source", "")), values["score"])
        except (AttributeError, KeyError, TypeError, ValueError, InputError, ModelError) as exc:
            raise ModelError(f"{source}: unusable 'open_set' calibration ({exc})",
                             hint="re-export the model with semobridge-export, or load it with unknown=None") from None


def check_threshold(value: Any, what: str = "unknown") -> float:
    """A threshold on an abstention score (one of SCORES, each in [0, 1]): a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise InputError(f"{what} must be a threshold in [0, 1] on the model's abstention score (a probability), "
                         f"got {value!r}", hint="pass unknown='auto' (the model's threshold), None (off) or a number such as 0.5")
    return float(value)


def decide(scores: np.ndarray, temperature: float, threshold: float | None,
           labels: np.ndarray | None = None, score: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels int64 [N], known bool [N], probabilities float32 [N, C]) from blend scores z [N, C].

    `labels`: the graph's argmax labels (computed here when not given); an unknown image's becomes
    UNKNOWN (-1). `score`: the abstention score [N] (open_set_score; the graph's OPEN_SET_SCORE output), the
    top calibrated probability when not given. threshold None: every image is known (the closed-set behaviour)."""
    probs = probabilities(scores, temperature)
    labels = np.argmax(scores, axis=1).astype(np.int64) if labels is None else np.asarray(labels, np.int64)
    score = abstention_score(probs) if score is None else np.asarray(score)
    known = np.ones(len(labels), bool) if threshold is None else score >= threshold
    return np.where(known, labels, UNKNOWN), known, probs


# ------------------------------------------------------------------ calibration (used by the fit and eval)

def nll(scores: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true labels under softmax(z / T)."""
    z = np.asarray(scores, np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(scores: np.ndarray, labels: np.ndarray, iterations: int = 100) -> float:
    """The T minimising the NLL (Guo et al., 2017) over TEMPERATURE_RANGE: the NLL is convex in β = 1/T, with
    derivative mean(E_p[z] - z_y) and second derivative mean(Var_p[z]) under p = softmax(β z); safeguarded Newton
    steps on β (a geometric bisection of the bracket where a step would leave it) find the root of the derivative
    in about ten passes over the scores, or the end of the range the NLL falls towards."""
    z = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.int64)
    own = z[np.arange(len(labels)), labels]
    z = z - z.max(axis=1, keepdims=True)  # shifts z and z_y alike: the derivatives do not change
    own = own - (np.asarray(scores, np.float64).max(axis=1))

    def slope(beta: float) -> tuple[float, float]:
        e = np.exp(beta * z)
        p = e / e.sum(axis=1, keepdims=True)
        mean = (p * z).sum(axis=1)
        return float((mean - own).mean()), float(((p * z * z).sum(axis=1) - mean * mean).mean())

    lo, hi = 1 / TEMPERATURE_RANGE[1], 1 / TEMPERATURE_RANGE[0]
    if slope(lo)[0] >= 0:
        return TEMPERATURE_RANGE[1]
    if slope(hi)[0] <= 0:
        return TEMPERATURE_RANGE[0]
    beta = 1.0
    for _ in range(iterations):
        g, h = slope(beta)
        if g > 0:
            hi = beta
        else:
            lo = beta
        step = beta - g / h if h > 0 else 0.0
        following = step if lo < step < hi else float(np.sqrt(lo * hi))
        if abs(following - beta) <= 1e-12 * beta:
            beta = following
            break
        beta = following
    return float(1 / beta)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: Σ_b |B|/N · |accuracy(B) - confidence(B)| over equal-width confidence bins."""
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    right = (pred == np.asarray(labels)).astype(np.float64)
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.sum() * abs(right[m].mean() - conf[m].mean())
    return float(total / len(labels))


def threshold_at(known_scores: np.ndarray, accept: float = ACCEPT) -> float:
    """The largest threshold that accepts at least `accept` of these known images' scores."""
    s = np.sort(np.asarray(known_scores, np.float64))
    if not len(s):
        raise InputError("no known images to calibrate the threshold on")
    return float(s[int(np.floor((1 - accept) * len(s) + 1e-9))] if accept < 1 else s[0])


def conformal_threshold(known_scores: np.ndarray, accept: float = ACCEPT) -> float:
    """The split-conformal threshold (Vovk et al., 2005; Angelopoulos and Bates, 2021): the k-th smallest of n
    held-out known scores, k = floor((n + 1)(1 - accept)), so that a new known image exchangeable with them is
    accepted with probability (n + 1 - k) / (n + 1), in [accept, accept + 1 / (n + 1)). With k = 0 (fewer than
    1 / (1 - accept) - 1 images: 19 at 95 %) no threshold keeps that promise but 0, which accepts every image."""
    s = np.sort(np.asarray(known_scores, np.float64))
    if not len(s):
        raise InputError("no known images to calibrate the threshold on")
    k = int(np.floor((len(s) + 1) * (1 - accept) + 1e-9))
    return float(s[k - 1]) if k >= 1 else 0.0


def calibrated(val: tuple[np.ndarray, np.ndarray] | None, loo: tuple[np.ndarray, np.ndarray],
               accept: float = ACCEPT) -> tuple[float, float] | None:
    """(T, θ) from the blend scores z and labels of the held-out known images (docs/method.md, "The open set"):
    T minimises the NLL of the validation images (of the leave-one-out shots when there are none); θ accepts
    `accept` of all of them, conformally (conformal_threshold). None when there is no held-out image. The one
    rule of the fit's calibration (semobridge.calibrate) and of an edited class set's
    (semobridge_runtime.calibration)."""
    parts = [p for p in (val, loo) if p is not None and len(p[1])]
    if not parts:
        return None
    temperature = fit_temperature(np.asarray(parts[0][0], np.float64), parts[0][1])
    z = np.concatenate([np.asarray(p[0], np.float64) for p in parts])
    return temperature, conformal_threshold(abstention_score(probabilities(z, temperature)), accept)


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(score of a known image > score of an unknown one), ties counted half (Mann-Whitney U)."""
    u = np.sort(np.asarray(unknown, np.float64))
    k = np.asarray(known, np.float64)
    below, at_most = np.searchsorted(u, k, "left"), np.searchsorted(u, k, "right")
    return float((below + at_most).mean() / (2 * len(u)))


def fpr_at_tpr(known: np.ndarray, unknown: np.ndarray, tpr: float = 0.95) -> float:
    """The fraction of unknown images accepted at the threshold that accepts `tpr` of the known ones."""
    return float((np.asarray(unknown) >= threshold_at(known, tpr)).mean())

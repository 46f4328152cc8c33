"""The open-set decision: calibrated probabilities, the abstention score and "unknown" (docs/method.md).

The definition, from the blend scores z [N, C] alone (the library's fit calibrates its constants):

- probabilities = softmax(z / T), T fitted on validation by negative log-likelihood;
- the abstention score is one of SCORES, chosen per model by the fit: the top class's calibrated probability
  max_c softmax(z / T)_c, or Maximum Concept Matching (MCM, Ming et al., 2022) max_c softmax(n(q)·T_c / MCM_TAU)_c
  on the image-text cosines; the graph computes (1 - w)·max probability + w·MCM, fed w = mcm_weight(score);
- an image is known when its score >= the threshold (calibrated so that a new known image is accepted with a
  chosen probability); an unknown image gets label -1.

The exported graph computes it (export/fused.py: outputs probabilities and known, fed T and the
threshold), so every front-end (this runtime, C, semobridge-serve, Triton) reads one answer; `decide`
here is its reference (tests/runtime/test_front_ends.py checks each front-end against it), and what
evaluation, video smoothing and graphs exported before the decision use.

Also here, for the fit, enrolment and evaluation: `calibrated` (the one rule: the temperature fit, the score's
choice by leave-one-class-out, the threshold at an expected acceptance), the expected calibration error, AUROC and
the false-positive rate at a true-positive rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

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
                         f"got {value!r}", hint="pass unknown='auto' (the model's threshold), None (off) or a number on the model's score (Classifier.score; the top probability spans [1/C, 1], MCM stays just above 1/C)")
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


def student_t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with an integer df >= 1 (the closed forms of Abramowitz and Stegun 26.7.3-4)."""
    theta = np.arctan(abs(t) / np.sqrt(df))
    c2 = np.cos(theta) ** 2
    term, total = 1.0, 1.0
    if df % 2:  # odd: (2 / π)(θ + sin θ cos θ (1 + 2/3 cos² θ + ... + (2·4···(df - 3)) / (1·3···(df - 2)) cos^(df - 3) θ))
        for j in range(2, df - 1, 2):
            term *= c2 * j / (j + 1)
            total += term
        a = 2 / np.pi * (theta + (np.sin(theta) * np.cos(theta) * total if df > 1 else 0.0))
    else:  # even: sin θ (1 + 1/2 cos² θ + ... + (1·3···(df - 3)) / (2·4···(df - 2)) cos^(df - 2) θ)
        for j in range(1, df - 2, 2):
            term *= c2 * j / (j + 1)
            total += term
        a = np.sin(theta) * total
    return float(0.5 + 0.5 * a if t >= 0 else 0.5 - 0.5 * a)


def student_t_quantile(p: float, df: int) -> float:
    """The t with P(T <= t) = p (0.5 <= p < 1), by bisection on student_t_cdf."""
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        lo, hi = hi, 2 * hi
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if student_t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def threshold_for(known_scores: np.ndarray, accept: float = ACCEPT, lowest: float = 0.0) -> float:
    """The threshold whose expected acceptance of a new known image is `accept`, from n held-out known images'
    scores s_1 <= ... <= s_n: the value at the fractional rank r = (n + 1)(1 - accept), linearly interpolated
    between the order statistics s_k and s_(k+1), k = floor(r), with s_0 = `lowest` (the score's lower bound,
    1 / C for both SCORES) and s_n above rank n. For exchangeable continuous scores, s_k is below a new score with
    probability k / (n + 1); the interpolation carries that to every fractional rank (exactly where the scores'
    distribution is uniform between s_k and s_(k+1)), so the split-conformal k-th order statistic's excess (it
    accepted between `accept` and `accept` + 1 / (n + 1)) is gone.

    Below one rank (r < 1: fewer than 19 images at 95 %) no order statistic lies low enough and no distribution-free
    rule can place θ under the lowest score; there θ is the normal-theory prediction bound on u = log(s - lowest):
    exp(mean(u) - t_(n-1)(accept) · sd(u) · sqrt(1 + 1 / n)) above `lowest`, which a new score passes with probability
    `accept` exactly when u is normal (docs/method.md; a single image: the interpolation above).
    One model's acceptance still varies around the expectation by about sqrt(a (1 - a) / (n + 2))."""
    s = np.sort(np.asarray(known_scores, np.float64))
    if not len(s):
        raise InputError("no known images to calibrate the threshold on")
    lowest = min(lowest, s[0])
    r = (len(s) + 1) * (1 - accept)
    if r < 1 - 1e-9 and len(s) >= 2 and accept < 1:
        return prediction_bound(s, accept, lowest)
    s = np.concatenate([[lowest], s])
    k = int(np.floor(r + 1e-9))
    if k >= len(s) - 1:
        return float(s[-1])
    return float(s[k] + max(r - k, 0.0) * (s[k + 1] - s[k]))


PREDICTION_FLOOR = 1e-6  # s - lowest below this counts as this in prediction_bound (no log of 0)


def prediction_bound(s: np.ndarray, accept: float, lowest: float) -> float:
    """threshold_for below one rank (n >= 2 scores): the normal-theory lower prediction bound on u = log(s - lowest),
    mapped back to the score (s_1 where the scores do not vary). The log spreads MCM's values just above 1/C and is
    nearly linear for top probabilities near 1, so a score that saturates at 1.0 does not pull the bound down."""
    s = np.asarray(s, np.float64)
    u = np.log(np.maximum(s - lowest, PREDICTION_FLOOR))
    bound = u.mean() - student_t_quantile(accept, len(u) - 1) * u.std(ddof=1) * np.sqrt(1 + 1 / len(u))
    return float(min(lowest + np.exp(bound), s.max()))  # PREDICTION_FLOOR must not lift it over every score


CHOICE_SE = 2.0  # the blend's probability is chosen over MCM when its mean LOCO AUROC gain exceeds this many standard errors


LOCO_COLUMNS = 64  # classes whose dropped-column scores loco_aurocs computes at once ([M, 64] float64)


def loco_aurocs(scores: np.ndarray, labels: np.ndarray, temperature: float) -> np.ndarray:
    """Leave-one-class-out AUROCs [C] of the top softmax(scores / T) probability: class c plays the unknown, its
    column dropped (every other image known); NaN where class c has no image or is the only one, and for C < 3 (one
    column left: a constant score). In O(M·C) arithmetic and one sort of M scores per class, for M images: with the
    top value m1, its column a1, the second m2, S1 = Σ_j e^(z_j - m1) and S2 = Σ_(j != a1) e^(z_j - m2) of each
    image (z = scores / T), dropping column c leaves the top probability 1 / (S1 - e^(z_c - m1)), or 1 / S2 where
    c = a1 (S1 - e^(z_c - m1) >= 1 there: no cancellation)."""
    order = np.argsort(np.asarray(labels), kind="stable")  # each class's images contiguous
    z, labels = np.asarray(scores, np.float64)[order] / temperature, np.asarray(labels)[order]
    M, C = z.shape
    out = np.full(C, np.nan)
    if C < 3:
        return out
    bounds = np.searchsorted(labels, np.arange(C + 1))
    rows = np.arange(M)
    a1 = z.argmax(1)
    m1 = z[rows, a1]
    s1 = np.exp(z - m1[:, None]).sum(1)
    rest = z.copy()
    rest[rows, a1] = -np.inf
    m2 = rest.max(1)
    s2 = np.exp(rest - m2[:, None]).sum(1)
    del rest
    for start in range(0, C, LOCO_COLUMNS):
        columns = np.arange(start, min(start + LOCO_COLUMNS, C))
        top = np.ascontiguousarray((1 / np.where(a1[:, None] == columns[None], s2[:, None],
                                                 s1[:, None] - np.exp(z[:, columns] - m1[:, None]))).T)
        for j, c in enumerate(columns):
            lo, hi = bounds[c], bounds[c + 1]
            if 0 < hi - lo < M:
                out[c] = auroc(np.concatenate([top[j, :lo], top[j, hi:]]), top[j, lo:hi])
    return out


def choose_score(z: np.ndarray, text_cosines: np.ndarray, labels: np.ndarray, temperature: float,
                 scores: Sequence[str] = SCORES) -> tuple[str, dict[str, float]]:
    """(the abstention score, its LOCO figures): each class with held-out images plays the unknown in turn
    (loco_aurocs, of the top probability at T and of MCM); the top probability is chosen when the mean of the
    per-class AUROC differences exceeds CHOICE_SE standard errors of them, else MCM (the published zero-shot
    baseline; also where LOCO cannot tell: fewer than two classes with images, or two classes, where one column
    is left). `scores`: those the graph can compute (a graph exported before the choice: max_probability only).
    Figures: the mean LOCO AUROC of each of SCORES and the standard error of the difference ({} without LOCO)."""
    if "mcm" not in scores:
        return SCORE, {}
    p, m = loco_aurocs(z, labels, temperature), loco_aurocs(text_cosines, labels, MCM_TAU)
    done = ~np.isnan(p)
    if done.sum() < 2:
        return "mcm", {}
    d = p[done] - m[done]
    se = float(d.std(ddof=1) / np.sqrt(len(d)))
    figures = {"max_probability": float(p[done].mean()), "mcm": float(m[done].mean()), "se": se}
    return ("max_probability" if d.mean() > CHOICE_SE * se else "mcm"), figures


@dataclass(frozen=True)
class Held:
    """Held-out known images: their blend scores z [M, C], image-text cosines n(q)·T_c [M, C] and labels [M]."""

    scores: np.ndarray
    text_cosines: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Calibrated:
    """What openset.calibrated found, and what it was found on."""

    temperature: float
    threshold: float  # on `score`
    score: str  # one of SCORES
    accept: float
    loco: dict[str, float]  # choose_score's figures ({}: no LOCO)
    nll_on: tuple[np.ndarray, np.ndarray]  # (z, labels) the temperature minimises the NLL of
    images: int  # held-out images the threshold was calibrated on

    def open_set(self, source: str) -> OpenSet:
        return OpenSet(self.temperature, self.threshold, self.accept, source, self.score)


def calibrated(val: Held | None, loo: Held, accept: float = ACCEPT, scores: Sequence[str] = SCORES) -> Calibrated | None:
    """The open set from the held-out known images (docs/method.md, "The open set"): T minimises the NLL of the
    validation images (of the leave-one-out shots when there are none); the score is chosen by leave-one-class-out
    on all of them (choose_score); θ on that score accepts `accept` of a new known image in expectation
    (threshold_for, lowest 1 / C). None when there is no held-out image. The one rule of the fit's calibration
    (semobridge.calibrate) and of an edited class set's (semobridge_runtime.calibration); `scores`: those the
    graph can compute (choose_score)."""
    parts = [p for p in (val, loo) if p is not None and len(p.labels)]
    if not parts:
        return None
    nll_on = (np.asarray(parts[0].scores, np.float64), np.asarray(parts[0].labels))
    temperature = fit_temperature(*nll_on)
    z, cos, y = (np.concatenate([np.asarray(getattr(p, n), np.float64) for p in parts]) for n in ("scores", "text_cosines", "labels"))
    score, loco = choose_score(z, cos, y.astype(np.int64), temperature, scores)
    values = open_set_score(probabilities(z, temperature), cos, score)
    threshold = threshold_for(values, accept, 1 / z.shape[1])
    return Calibrated(temperature, threshold, score, accept, loco, nll_on, len(y))


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(score of a known image > score of an unknown one), ties counted half (Mann-Whitney U): the smaller set's
    scores searched in the larger one's, sorted (O((n_k + n_u) log) either way; leave-one-class-out calls it with
    one class's few images against all others)."""
    k, u = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    if len(u) <= len(k):
        s = np.sort(k)
        below, at_most = np.searchsorted(s, u, "left"), np.searchsorted(s, u, "right")
        return float(1 - (below + at_most).sum() / (2 * len(k) * len(u)))
    s = np.sort(u)
    below, at_most = np.searchsorted(s, k, "left"), np.searchsorted(s, k, "right")
    return float((below + at_most).sum() / (2 * len(k) * len(u)))


def fpr_at_tpr(known: np.ndarray, unknown: np.ndarray, tpr: float = 0.95) -> float:
    """The fraction of unknown images accepted at the threshold that accepts `tpr` of the known ones."""
    return float((np.asarray(unknown) >= threshold_at(known, tpr)).mean())

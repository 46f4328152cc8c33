"""Evaluation figures shared by `semobridge eval` (library) and the runtime: per-class accuracy, macro-F1, the
confusion matrix, and the open-set figures (AUROC, FPR at 95 % TPR, accuracy on known classes at the operating point)."""

from __future__ import annotations

import csv
import io
from typing import Any, Sequence

import numpy as np

from . import openset


def confusion(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [C, C]: row = true class, column = predicted class (closed-set: every image gets a class)."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    return matrix


def closed_set(labels: np.ndarray, predicted: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Top-1 accuracy (the headline), per-class accuracy (recall), macro-F1 and the confusion matrix."""
    C = len(names)
    m = confusion(labels, predicted, C)
    right = np.diag(m).astype(np.float64)
    support, called = m.sum(1), m.sum(0)
    recall = np.divide(right, support, out=np.zeros(C), where=support > 0)
    precision = np.divide(right, called, out=np.zeros(C), where=called > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(C), where=precision + recall > 0)
    present = support > 0
    return {
        "accuracy": float(right.sum() / max(support.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": [{"class": n, "images": int(s), "accuracy": float(r), "precision": float(p), "f1": float(f)}
                      for n, s, r, p, f in zip(names, support, recall, precision, f1)],
        "confusion": m.tolist(),
    }


def open_set(known: np.ndarray, unknown: np.ndarray) -> dict[str, float]:
    """AUROC and FPR at 95 % TPR of a score (higher: more known) on known and unknown images."""
    return {"auroc": openset.auroc(known, unknown), "fpr_at_95_tpr": openset.fpr_at_tpr(known, unknown, 0.95)}


def folds(num_classes: int) -> list[list[int]]:
    """Leave-classes-out: the classes in two folds (even and odd indices), each in turn the unknown one."""
    return [list(range(0, num_classes, 2)), list(range(1, num_classes, 2))]


def open_set_fold(scores: np.ndarray, text_cosines: np.ndarray, kept: Sequence[int], labels: np.ndarray,
                  temperature: float, threshold: float | None, score: np.ndarray | None = None) -> dict[str, Any]:
    """The figures of one fold: blend scores z and zero-shot cosines n(q) · T_c [N, len(kept)] against the kept
    classes only, the true labels [N] in the full class set's indices. AUROC and FPR at 95 % TPR of the top
    calibrated probability and of MCM (max softmax of the cosines, τ = 1); at `threshold`, the known images
    accepted and the accuracy on them (a refused known image counts as wrong), deciding on `score` [N] (the model's
    abstention score: the graph's open_set_score) where given, else on the top calibrated probability."""
    is_known = np.isin(labels, kept)
    pred, known, probs = openset.decide(scores, temperature, threshold, score=score)
    msp = openset.abstention_score(probs)
    e = np.exp(text_cosines - text_cosines.max(1, keepdims=True))
    mcm = (e / e.sum(1, keepdims=True)).max(1)
    mapped = np.where(pred >= 0, np.asarray(kept)[np.maximum(pred, 0)], -1)
    return {
        **open_set(msp[is_known], msp[~is_known]),
        **{f"mcm_{k}": v for k, v in open_set(mcm[is_known], mcm[~is_known]).items()},
        "known_accepted": float(known[is_known].mean()) if threshold is not None else None,
        "known_accuracy_at_operating_point": float((mapped[is_known] == labels[is_known]).mean()),
    }


def mean_of_folds(per_fold: list[dict[str, Any]], temperature: float, threshold: float | None) -> dict[str, Any]:
    numbers = [k for k, v in per_fold[0].items() if isinstance(v, float)]
    return {"threshold": threshold, "temperature": temperature, "folds": per_fold,
            **{k: float(np.mean([f[k] for f in per_fold])) for k in numbers}}


def per_class_csv(report: dict[str, Any]) -> str:
    """The per-class rows as CSV."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ["class", "images", "accuracy", "precision", "f1"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(report["per_class"])
    return out.getvalue()


def confusion_table(report: dict[str, Any], names: Sequence[str], width: int = 6) -> str:
    """The confusion matrix as text: one row per true class, columns numbered as the rows."""
    head = " " * 4 + "".join(f"{i:>{width}}" for i in range(len(names)))
    rows = [f"{i:>3} " + "".join(f"{v:>{width}}" for v in row) + f"  {name}" for i, (row, name) in enumerate(zip(report["confusion"], names))]
    return "\n".join([head, *rows])

"""`semobridge-eval MODEL DATA`: evaluate an exported model through the runtime (no PyTorch).

DATA holds one folder of images per class (`DATA/<split>/<class>/` or `DATA/<class>/`), named as the
model's classes (case and "_" for " " aside). Prints top-1 accuracy (the headline), macro-F1,
per-class accuracy and the confusion matrix; with --open-set the leave-classes-out figures (each
half of the classes in turn removed from the class set and played as unknown), MCM beside.
The figures are those of `semobridge eval` (semobridge_runtime.evaluation), on the deployed artifact.
Exit codes: 0 done, 2 input error, 3 model error, 4 runtime error (docs/errors.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from . import __version__, evaluation, tensorfile
from .classifier import Classifier
from .commandline import command, model_argument, unknown_option, version_option
from .errors import InputError
from .images import IMAGE_SUFFIXES

BATCH = 32


def labelled_images(data: Path, split: str, names: list[str]) -> tuple[list[str], np.ndarray]:
    """(image paths, class indices) of DATA's class folders, matched to the model's class names."""
    root = data / split if (data / split).is_dir() else data
    if not root.is_dir():
        raise InputError(f"{data} is not a folder", hint="give a folder of class folders (DATA/<class>/*.png)")
    index = {n.casefold(): i for i, n in enumerate(names)}
    paths, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        c = index.get(folder.name.replace("_", " ").casefold(), index.get(folder.name.casefold()))
        if c is None:
            raise InputError(f"class folder {folder.name!r} is not one of the model's classes ({', '.join(names[:8])}"
                             + (", ..." if len(names) > 8 else "") + ")", hint="name class folders as the model's classes")
        files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        paths += files
        labels += [c] * len(files)
    if not paths:
        raise InputError(f"no images in the class folders of {root}", hint=f"image files end in {', '.join(IMAGE_SUFFIXES)}")
    return paths, np.asarray(labels, np.int64)


def predict(clf: Classifier, paths: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(scores, decided labels, embeddings, open-set scores) of every image, in batches."""
    parts = [clf.predict(paths[i:i + BATCH], top_k=1) for i in range(0, len(paths), BATCH)]
    return tuple(np.concatenate([getattr(p, name) for p in parts])  # type: ignore[return-value]
                 for name in ("scores", "labels", "embeddings", "open_set_score"))


def evaluate(model: str, data: str, split: str = "test", unknown: str | float | None = "auto", open_set: bool = False,
             no_int8: bool = False) -> dict[str, Any]:
    def load() -> Classifier:
        return Classifier.load(model, prefer_int8=not no_int8, unknown=unknown)

    clf = load()
    names = clf.class_names
    paths, labels = labelled_images(Path(data), split, names)
    scores, decided, _, _ = predict(clf, paths)
    result: dict[str, Any] = {"model": str(clf.path), "images": len(labels), "class_names": names,
                              **evaluation.closed_set(labels, scores.argmax(1), names),
                              "threshold": clf.threshold, "accepted": float((decided >= 0).mean()),
                              "accuracy_at_operating_point": float((decided == labels).mean())}
    if open_set:
        per_fold = []
        for unknown_fold in evaluation.folds(len(names)):
            fold = load()
            for c in unknown_fold:
                fold.remove_class(names[c])
            kept = [c for c in range(len(names)) if c not in unknown_fold]
            z, _, q, score = predict(fold, paths)
            figures = evaluation.open_set_fold(z, q @ fold.classes.text_classifier.T, kept, labels, fold.temperature,
                                               fold.threshold, score)
            per_fold.append({"unknown_classes": [names[c] for c in unknown_fold], **figures})
        result["open_set"] = evaluation.mean_of_folds(per_fold, clf.temperature, clf.threshold)
    return result


def describe(result: dict[str, Any]) -> str:
    pct = lambda v: f"{100 * v:.2f} %"  # noqa: E731
    lines = [f"top-1 {pct(result['accuracy'])}, macro-F1 {pct(result['macro_f1'])} ({result['images']} images)",
             f"at the operating point: {pct(result['accepted'])} accepted, {pct(result['accuracy_at_operating_point'])} right"
             + ("" if result["threshold"] is not None else " (unknown off)"), "",
             f"{'class':<24}{'images':>7}{'accuracy':>11}{'F1':>11}"]
    lines += [f"{r['class'][:23]:<24}{r['images']:>7}{pct(r['accuracy']):>11}{pct(r['f1']):>11}" for r in result["per_class"]]
    lines += ["", "closed-set confusion matrix (rows: true class, columns: predicted)",
              evaluation.confusion_table(result, result["class_names"])]
    o = result.get("open_set")
    if o:
        lines += ["", "open set, leave-classes-out (mean of two folds):",
                  f"  top probability: AUROC {pct(o['auroc'])}, FPR at 95 % TPR {pct(o['fpr_at_95_tpr'])}",
                  f"  MCM (zero-shot): AUROC {pct(o['mcm_auroc'])}, FPR at 95 % TPR {pct(o['mcm_fpr_at_95_tpr'])}",
                  f"  known-class accuracy at the operating point: {pct(o['known_accuracy_at_operating_point'])}"]
    return "\n".join(lines)


@command("semobridge-eval", help=__doc__.replace("`", ""))
@model_argument(metavar="MODEL")
@click.argument("data")
@click.option("--split", default="test", show_default=True, help="Split folder to use when DATA has one.")
@unknown_option
@click.option("--open-set", is_flag=True, help="Also the leave-classes-out open-set figures.")
@click.option("--json", "json_out", metavar="FILE", help="Write every figure to this JSON file.")
@click.option("--csv", "csv_out", metavar="FILE", help="Write the per-class figures to this CSV file.")
@click.option("--no-int8", is_flag=True, help="Evaluate MODEL as given (not model_int8.onnx beside it).")
@version_option(__version__)
def cli(model: str, data: str, split: str, unknown, open_set: bool, json_out: str | None, csv_out: str | None,
        no_int8: bool) -> None:
    result = evaluate(model, data, split, unknown, open_set, no_int8)
    if json_out:
        tensorfile.write_atomic(json_out, json.dumps(result, indent=2).encode("utf-8"))
    if csv_out:
        tensorfile.write_atomic(csv_out, evaluation.per_class_csv(result).encode("utf-8"))
    print(describe(result))


def main(argv: list[str] | None = None) -> int:
    """The console script; returns the exit code (docs/errors.md)."""
    return cli.main(argv, standalone_mode=False)


if __name__ == "__main__":
    sys.exit(main())

"""Out-of-distribution evaluation of an ImageNet model: ImageNet-V2, -Sketch, -A and -R by mapping classes.

A folder of an ImageNet variant names its classes by ImageNet-1k index (ImageNet-V2's
`0` … `999`), by WordNet id (ImageNet-Sketch, -A, -R: `n01440764`, …) or by class name. Each
is mapped to the model's class; with fewer classes than the model (ImageNet-A and -R: 200),
the model is restricted to those classes, as the published code does: the rows of T, P, I and
the class bias are kept and the class weights are recomputed over the kept classes.
"""
from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path

from .data import DataError
from .model import SeMoBridge
from .prototypes import class_kl

WNIDS = Path(__file__).resolve().parent / "wnids"
IMAGENET_CLASSES = 1000
#: The 200-class subsets (semobridge/wnids/README.md).
SUBSETS = {"ImageNet-A": "imagenet_a.txt", "ImageNet-R": "imagenet_r.txt"}
OOD_OF = ("imagenet",)


@cache
def wnids(name: str = "imagenet.txt") -> tuple[str, ...]:
    """WordNet ids of a packaged list (ImageNet-1k in its standard order by default)."""
    return tuple((WNIDS / name).read_text().split())


def imagenet_indices(names: list[str], model_names: list[str]) -> list[int]:
    """The ImageNet class index of each class of an ImageNet variant (see the module docstring)."""
    if len(model_names) != IMAGENET_CLASSES:
        raise DataError(
            f"--ood-of imagenet needs a model fitted on ImageNet's {IMAGENET_CLASSES} classes; this one has {len(model_names)}"
        )
    standard = {w: i for i, w in enumerate(wnids())}
    if set(model_names) <= set(standard) and list(model_names) != list(wnids()):
        raise DataError("the model's classes are WordNet ids but not in ImageNet's standard (sorted) order; fit it on "
                        "ImageNet's train folder as it is")
    by_name = {n.lower(): i for i, n in enumerate(model_names)}
    out, unknown = [], []
    for name in names:
        key = name.strip()
        index = int(key) if key.isdigit() and int(key) < IMAGENET_CLASSES else standard.get(key, by_name.get(key.lower()))
        if index is None:
            unknown.append(name)
        out.append(index)
    if unknown:
        raise DataError(
            f"{len(unknown)} class folder(s) are not ImageNet classes ({', '.join(map(repr, unknown[:5]))}): name them by "
            "ImageNet index (0-999, ImageNet-V2's layout), by WordNet id (n01440764, ...) or by the model's class name"
        )
    if len(set(out)) != len(out):
        raise DataError("two class folders map to the same ImageNet class; keep one folder per class")
    return out


def describe_classes(indices: list[int]) -> str:
    """Which ImageNet classes these are, in words (a partial copy of a known subset is named as such)."""
    chosen = set(indices)
    if len(chosen) == IMAGENET_CLASSES:
        return "all 1000 ImageNet classes"
    standard = {w: i for i, w in enumerate(wnids())}
    for name, file in SUBSETS.items():
        subset = {standard[w] for w in wnids(file)}
        if chosen == subset:
            return f"{name}'s 200 classes"
        if chosen < subset:
            return f"{len(chosen)} of {name}'s 200 classes (an incomplete copy: the published figure uses all 200)"
    return f"{len(chosen)} of the 1000 ImageNet classes"


def restrict(head: SeMoBridge, indices: list[int]) -> SeMoBridge:
    """The model on these classes only, in this order (class weights recomputed over them)."""
    if indices == list(range(head.num_classes)):
        return head
    I, T = head.image_prototypes[indices], head.text_classifier[indices]
    info = replace(head.info, class_names=[head.info.class_names[i] for i in indices])
    bias = head.class_bias[indices] if head.class_bias is not None else None
    return SeMoBridge(head.bridge, T, head.bridged_prototypes[indices], I, class_kl(I, T), info, bias)

"""From a folder of labelled images to a fitted model, and its evaluation."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
from semobridge_runtime import evaluation, openset

from .backbones import Backbone, load_backbone
from .blend import BlendParams
from .data import DataError, Dataset, FewShotSplit, few_shot_split, load_dataset
from .datasets import FLIP, Augment, DatasetSpec, find_dataset
from .encode import EmbeddingCache, encode_items, encode_prompts
from .errors import InputError
from .features import FeatureSet
from .fit import fit_features
from .model import ModelInfo, SeMoBridge
from .ood import OOD_OF, describe_classes, imagenet_indices, restrict
from .prompts import build_prompts, class_descriptions, cupl_file, load_descriptions, missing_cupl_message, templates_for
from .protocol import CONSISTENT, Protocol, get_protocol, whole_val


def augment_option(copies: int | None, spec: DatasetSpec | None, shots: int, protocol: Protocol = CONSISTENT) -> Augment:
    """`--augment N` (1: a flip; more: N random resized crops with jitter), else the paper's;
    crops are square in the paper protocol."""
    if copies is None:
        aug = spec.augment_for(shots) if spec is not None else Augment(0)
    elif copies <= 1:
        aug = Augment(copies, FLIP)
    else:
        aug = Augment(copies, "rrc", 0.5, True)
    return replace(aug, square=protocol.square_crops and aug.kind != FLIP)


@dataclass
class PromptOptions:
    """Which prompts describe the classes."""

    templates: Sequence[str] | None = None
    descriptions: str | Path | None = None  # a CuPL-style JSON file
    cupl_dir: str | Path | None = None  # folder with the paper's CuPL files [default: the package's]


def description_file(spec: DatasetSpec | None, prompts: PromptOptions) -> Path | None:
    """--descriptions, else the paper dataset's CuPL file (a warning when it has none)."""
    if prompts.descriptions:
        return Path(prompts.descriptions)
    path = cupl_file(spec, prompts.cupl_dir)
    if path is None and spec is not None and spec.cupl is not None:
        warnings.warn(missing_cupl_message(spec, prompts.cupl_dir), stacklevel=2)
    return path


@dataclass
class ClassText:
    """Pooled EOS tokens of every prompt of every class, and the prompts' sources."""

    eos: torch.Tensor  # [M, d_t]
    prompt_class: torch.Tensor  # int64 [M]
    templates: list[str]
    descriptions: dict[str, list[str]]  # the classes' descriptions, by lower-case class name


def class_text(backbone: Backbone, dataset: Dataset, spec: DatasetSpec | None, descriptions: Path | None,
               prompts: PromptOptions, cache: EmbeddingCache) -> ClassText:
    """Pooled EOS tokens and their classes for every prompt of every class."""
    loaded = load_descriptions(descriptions) if descriptions else None
    templates = templates_for(spec, prompts.templates)
    texts, classes = build_prompts(dataset.class_names, templates, loaded)
    used = class_descriptions(dataset.class_names, loaded) if loaded else {}
    return ClassText(encode_prompts(backbone, texts, cache), torch.tensor(classes, dtype=torch.long), templates, used)


class Fitted(NamedTuple):
    """What `fit_dataset` returns: the head, the backbone it was fitted on, and the few-shot split it drew."""

    head: SeMoBridge
    backbone: Backbone
    split: FewShotSplit  # the shots the head was fitted on and its validation items (e.g. for export's int8 check)


def fit_dataset(
    data: str | Path,
    shots: int,
    *,
    model: str = "ViT-B-16",
    pretrained: str | None = "openai",
    seed: int = 1,
    train: bool = False,
    steps: int = 5000,
    csb: bool = True,
    params: BlendParams | None = None,
    search_trials: int | None = None,
    search: str = "coordinate",
    augment: int | None = None,
    dataset_name: str | None = None,
    class_names_file: str | Path | None = None,
    prompts: PromptOptions = PromptOptions(),
    cache: EmbeddingCache | None = None,
    backbone: Backbone | None = None,
    device: str | torch.device | None = None,
    log: Callable[[dict], None] | None = None,
    protocol: str | Protocol | None = None,
) -> Fitted:
    """Fit SeMoBridge (or SeMoBridge-T with `train`) on K shots per class of a dataset: (head, backbone, split).

    `protocol` (semobridge.protocol): default paper for the paper's datasets and for `train`,
    consistent otherwise."""
    dataset = load_dataset(data, class_names_file)
    spec = find_dataset(dataset_name or dataset.name)
    protocol = get_protocol(protocol, spec, train)
    split = few_shot_split(dataset, shots, seed, whole_val=whole_val(protocol, spec))
    backbone = backbone or load_backbone(model, pretrained, device=device)
    cache = cache or EmbeddingCache()
    aug = augment_option(augment, spec, shots, protocol)
    descriptions = description_file(spec, prompts)
    text = class_text(backbone, dataset, spec, descriptions, prompts, cache)
    shot_image, shot_label = encode_items(backbone, split.shots, cache, aug, seed, desc="encoding shots")
    val_image, val_label = encode_items(backbone, split.val, cache, desc="encoding validation")
    features = FeatureSet(
        text_projection=backbone.text_projection.cpu(),
        text_eos=text.eos,
        text_class=text.prompt_class,
        shot_image=shot_image,
        shot_label=shot_label,
        val_image=val_image,
        val_label=val_label,
        logit_scale=backbone.logit_scale,
        class_names=dataset.class_names,
    )
    info = ModelInfo(
        class_names=dataset.class_names,
        backbone=backbone.identity(),
        image_size=backbone.image_size,
        mean=list(backbone.mean),
        std=list(backbone.std),
        params=BlendParams().to_dict(),
        shots=shots,
        val_source=split.val_source,
        augment=aug.describe(),
        dataset=spec.key if spec else dataset.name,
        templates=text.templates,
        descriptions=text.descriptions,
        extra={"descriptions": descriptions.name if descriptions else "none"},
    )
    head = fit_features(
        features, info, params=params, search_trials=search_trials, search=search, train=train, steps=steps, csb=csb, seed=seed,
        train_params=spec.train_params if spec else None,
        keep_last_step=bool(spec and spec.keep_last_step), log=log, device=backbone.device, protocol=protocol,
    )
    return Fitted(head, backbone, split)


@torch.no_grad()
def evaluate(
    head: SeMoBridge,
    backbone: Backbone,
    data: str | Path,
    split: str = "test",
    cache: EmbeddingCache | None = None,
    ood_of: str | None = None,
    open_set: bool = False,
) -> dict:
    """Top-1 accuracy of the model and of zero-shot CLIP (its text classifier) on a split, with per-class
    accuracy, macro-F1 and the confusion matrix (semobridge_runtime.evaluation).

    With `open_set`, also the leave-classes-out figures (`open_set_figures`).

    With `ood_of="imagenet"` the data is an ImageNet variant (V2, Sketch, A, R): its classes are
    mapped to the ImageNet model's (semobridge.ood), and a folder of plain class folders is
    evaluated whole.
    """
    head.check_backbone(backbone)
    dataset = load_dataset(data)
    classes = None
    if ood_of is not None:
        if ood_of not in OOD_OF:
            raise InputError(f"--ood-of {ood_of!r} is not supported", hint=f"use one of: {', '.join(OOD_OF)}")
        indices = imagenet_indices(dataset.class_names, head.info.class_names)
        head, classes = restrict(head, indices), describe_classes(indices)
        if not dataset.splits.get(split) and set(dataset.splits) == {"train"}:
            split = "train"  # plain class folders: every image
    elif [n.casefold() for n in dataset.class_names] != [n.casefold() for n in head.info.class_names]:
        theirs, mine = dataset.class_names, head.info.class_names
        first = next((i for i, (a, b) in enumerate(zip(theirs, mine)) if a.casefold() != b.casefold()), min(len(theirs), len(mine)))
        raise DataError(
            f"{data} has {len(theirs)} classes, the model {len(mine)}, and they differ at class {first} "
            f"({theirs[first] if first < len(theirs) else 'none'!r} vs {mine[first] if first < len(mine) else 'none'!r})",
            hint="evaluate on the dataset (and class names) the model was fitted on, or an ImageNet variant with --ood-of imagenet",
        )
    items = dataset.split(split)
    images, labels = encode_items(backbone, items, cache or EmbeddingCache(), desc=f"encoding {split}")
    scores = head(images)
    result = {
        "split": "folder" if ood_of is not None and split == "train" else split,
        "images": len(labels),
        "classes": classes or f"{len(dataset.class_names)} classes",
        "accuracy": float((scores.argmax(-1) == labels).float().mean()),
        "zero_shot_accuracy": float((head.zero_shot(images).argmax(-1) == labels).float().mean()),
        "class_names": list(head.info.class_names),
        **{k: v for k, v in evaluation.closed_set(labels.numpy(), scores.argmax(-1).numpy(), head.info.class_names).items()
           if k != "accuracy"},
    }
    if head.info.open_set:
        o = head.info.open_set
        score = openset.open_set_score(openset.probabilities(scores.numpy(), o["temperature"]),
                                       head.zero_shot(images).numpy(), o["score"])
        pred, known, _ = openset.decide(scores.numpy(), o["temperature"], o["threshold"], score=score)
        result["accepted"] = float(known.mean())  # of these images, all of enrolled classes
        result["accuracy_at_operating_point"] = float((pred == labels.numpy()).mean())  # refused counts as wrong
    if open_set:
        result["open_set"] = open_set_figures(head, images, labels)
    return result


@torch.no_grad()
def open_set_figures(head: SeMoBridge, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Leave-classes-out: the classes split into two folds (even and odd indices); each fold in turn plays the
    unknown while the model keeps the other fold's classes (semobridge.ood.restrict). Per fold and in the mean:
    AUROC and FPR at 95 % TPR of the top calibrated probability and of MCM (max softmax(n(q) · T_c), τ = 1), and,
    at the model's threshold, the known images accepted and the accuracy on them (refused counting as wrong)."""
    C = head.num_classes
    if C < 2:
        raise InputError("--open-set needs a model with at least two classes (one fold of them plays the unknown)")
    o = head.info.open_set or {}
    temperature, threshold, score = o.get("temperature", 1.0), o.get("threshold"), o.get("score", openset.SCORE)
    per_fold = []
    for unknown_fold in evaluation.folds(C):
        kept = [c for c in range(C) if c not in unknown_fold]
        h = restrict(head, kept)
        figures = evaluation.open_set_fold(h(images).numpy(), h.zero_shot(images).numpy(), kept, labels.numpy(),
                                           temperature, threshold, score)
        per_fold.append({"unknown_classes": [head.info.class_names[c] for c in unknown_fold], **figures})
    return evaluation.mean_of_folds(per_fold, temperature, threshold, score)

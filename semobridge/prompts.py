"""Prompts per class: CLIP's ensemble templates, a dataset template, CuPL descriptions."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Sequence

from .datasets import DatasetSpec
from .errors import InputError
from .files import read_text

#: The 7 "ensemble" templates of CLIP's ImageNet notebook.
ENSEMBLE_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
DEFAULT_TEMPLATE = "a photo of a {}."
CUPL_ENV = "SEMOBRIDGE_CUPL_DIR"
PACKAGED_CUPL = Path(__file__).resolve().parent / "cupl"


def load_descriptions(path: str | Path) -> dict[str, list[str]]:
    """A CuPL-style JSON file: class name -> list of sentences; keys lower-cased."""
    path = Path(path)
    try:
        data = json.loads(read_text(path, "class descriptions file"))
    except (InputError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read class descriptions from {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path} must be a JSON object mapping class names to lists of sentences")
    return {k.lower(): [str(s) for s in v] for k, v in data.items()}


def cupl_file(spec: DatasetSpec | None, cupl_dir: str | Path | None = None) -> Path | None:
    """The CuPL file of a paper dataset: in `cupl_dir`, else $SEMOBRIDGE_CUPL_DIR, else the
    package's own (semobridge/cupl, all but ImageNet's); None when there is none."""
    if spec is None or spec.cupl is None:
        return None
    path = Path(cupl_dir or os.environ.get(CUPL_ENV) or PACKAGED_CUPL) / spec.cupl
    return path if path.is_file() else None


def missing_cupl_message(spec: DatasetSpec, cupl_dir: str | Path | None = None) -> str:
    """What to say when a paper dataset's CuPL file is not found."""
    where = cupl_dir or os.environ.get(CUPL_ENV) or f"the package ({PACKAGED_CUPL})"
    return (
        f"no CuPL descriptions for {spec.key}: {spec.cupl} is not in {where}"
        + (" (ImageNet's file is not shipped with semobridge)" if spec.key == "imagenet" else "")
        + ". The published results use them; fitting with templates only. "
        f"Give --cupl-dir DIR with {spec.cupl} (class name -> sentences) or --descriptions FILE."
    )


def templates_for(spec: DatasetSpec | None, user_templates: Sequence[str] | None = None) -> list[str]:
    """User templates if given; else the paper's set for a known dataset; else the plain default."""
    if user_templates:
        bad = [t for t in user_templates if "{}" not in t]
        if bad:
            raise ValueError(f"template {bad[0]!r} has no '{{}}' placeholder for the class name")
        return list(user_templates)
    if spec is None:
        return [DEFAULT_TEMPLATE]
    return (list(ENSEMBLE_TEMPLATES) if spec.ensemble else []) + ([spec.template] if spec.template else [])


def class_descriptions(class_names: Sequence[str], descriptions: dict[str, list[str]]) -> dict[str, list[str]]:
    """The sentences of each class found in `descriptions` (keyed by lower-case name, or with `_`
    for spaces), keyed by the lower-case class name: what a model records for enrolment."""
    found = {}
    for name in class_names:
        key = name.lower()
        sentences = descriptions.get(key, descriptions.get(key.replace(" ", "_")))
        if sentences is not None:
            found[key] = list(sentences)
    return found


def build_prompts(
    class_names: Sequence[str], templates: Sequence[str], descriptions: dict[str, list[str]] | None = None
) -> tuple[list[str], list[int]]:
    """All prompts and the class of each: templates filled in, then the class's descriptions."""
    texts: list[str] = []
    classes: list[int] = []
    missing = []
    found = class_descriptions(class_names, descriptions) if descriptions is not None else {}
    for c, name in enumerate(class_names):
        mine = [t.format(name) for t in templates]
        if descriptions is not None:
            if name.lower() not in found:
                missing.append(name)
            mine += found.get(name.lower(), [])
        if not mine:
            raise ValueError(f"class {name!r} has no prompt: give templates or descriptions for it")
        texts += mine
        classes += [c] * len(mine)
    if missing:
        warnings.warn(
            f"no description for {len(missing)} class(es) ({', '.join(missing[:5])}); they use templates only",
            stacklevel=2,
        )
    return texts, classes

"""export(): a fitted head and its backbone -> the requested artifacts, all or nothing."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from semobridge.backbones import Backbone
from semobridge.model import SeMoBridge

from .formats import FORMATS, Job, resolve_formats
from .fused import FusedClassifier
from .metadata import build_metadata
from .preprocess import Preprocess
from .reference import synthetic_images
from .tensorrt import Profile, _import_tensorrt

CHECK_IMAGES = 32


def export(
    head: SeMoBridge,
    backbone: Backbone,
    out_dir: str | os.PathLike,
    formats: str | Sequence[str] = ("onnx",),
    *,
    half: bool = False,
    int8_cpu: bool = False,
    engine: bool = False,
    fixed_size: tuple[int, int] | None = None,
    input_kind: str = "uint8",
    profile: Profile = Profile(),
    check_images: Sequence[np.ndarray] | None = None,
    fit_images: Sequence[np.ndarray] | None = None,
    stem: str = "model",
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Write the requested formats (see FORMATS) into `out_dir`; return {format or "<file> metadata": path}.

    Everything is written into a temporary folder beside `out_dir` and moved in only when every
    format succeeded, so a failed export leaves nothing behind. `check_images` (uint8 HxWx3)
    measure the fp16 score drift (synthetic images when None); the int8 label agreement is measured on
    `fit_images` (the few-shot images the head was fitted on) when given, else on the check images.
    """
    names = resolve_formats(formats, half=half, int8_cpu=int8_cpu, engine=engine)
    if fixed_size is not None and input_kind != "uint8":
        raise ValueError("--fixed-size applies to uint8 input only; float input is always [N, 3, S, S]")
    if "engine" in names:
        _import_tensorrt()  # fail before the slow steps
    fused = FusedClassifier(head, backbone, input_kind)
    if check_images is None and {"onnx-fp16", "onnx-int8"} & set(names):
        check_images = synthetic_images(CHECK_IMAGES, seed=0)
    if fixed_size is not None:  # a static input takes only its size: the check and fit images at that size
        check_images, fit_images = ([np.asarray(Image.fromarray(np.asarray(im)).resize(fixed_size[::-1], Image.BICUBIC))
                                     for im in images] for images in (check_images or [], fit_images or []))
    if input_kind == "float":
        pre = Preprocess(backbone.image_size, backbone.mean, backbone.std)
        with torch.no_grad():
            check_images, fit_images = ([pre(torch.from_numpy(np.ascontiguousarray(im))[None])[0].numpy() for im in images]
                                        for images in (check_images or [], fit_images or []))
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        job = Job(fused, build_metadata(fused, fixed_size), stage, stem, fixed_size, profile, list(check_images or []),
                  list(fit_images or []), log)
        for name in names:
            log(f"writing {name} ...")
            job.written[name] = FORMATS[name].write(job)
        return _move_into(stage, out_dir, job.written)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _move_into(stage: Path, out_dir: Path, written: dict[str, Path]) -> dict[str, Path]:
    """Move every staged file (external weight files included) into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(stage.iterdir()):
        if path.is_file():
            os.replace(path, out_dir / path.name)
    return {key: out_dir / path.name for key, path in written.items()}

"""export(): a fitted head and its backbone -> the requested artifacts, all or nothing."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from semobridge import __version__
from semobridge.backbones import Backbone
from semobridge.errors import InputError
from semobridge.files import file_sha256
from semobridge.model import SeMoBridge
from semobridge.validate import image_size, output_dir

from .formats import DEFAULT_FORMATS, FORMATS, Job, resolve_formats
from .fused import FusedClassifier
from .metadata import build_metadata
from .preprocess import Preprocess
from .reference import synthetic_images
from .tensorrt import Profile, _import_tensorrt

CHECK_IMAGES = 32  # images of the dataset (or synthetic ones) that measure fp16 drift and int8 agreement
MANIFEST = "manifest.json"


def export(
    head: SeMoBridge,
    backbone: Backbone,
    out_dir: str | os.PathLike,
    formats: str | Sequence[str] = DEFAULT_FORMATS,
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
    out_dir = check_out_dir(out_dir)
    if fixed_size is not None:
        if input_kind != "uint8":
            raise InputError("--fixed-size applies to uint8 input only; float input is always [N, 3, S, S]")
        image_size(*fixed_size, "--fixed-size")
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
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        job = Job(fused, build_metadata(fused, fixed_size), stage, stem, fixed_size, profile, list(check_images or []),
                  list(fit_images or []), log, backbone)
        for name in names:
            log(f"writing {name} ...")
            job.written[name] = FORMATS[name].write(job)
        write_manifest(stage)
        return _move_into(stage, out_dir, job.written)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_manifest(folder: Path) -> Path:
    """MANIFEST (manifest.json): every artifact of the export, its size and SHA-256. It marks the folder
    as ours, so that a later export may replace it as a whole."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in files}
    path = folder / MANIFEST
    path.write_text(json.dumps({"semobridge_export": __version__, "files": entries}, indent=2), encoding="utf-8")
    return path


def _ours(out_dir: Path) -> set[str]:
    """Top-level names an earlier export wrote into out_dir (from its manifest)."""
    try:
        files = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))["files"]
        return {MANIFEST} | {name.split("/")[0] for name in files}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):  # not a manifest of ours
        return set()


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """The output folder may be new, empty, or hold exactly an earlier export (which is then replaced
    as a whole): never files of someone else's. Checked before the fit."""
    out_dir = output_dir(out_dir, "--out folder")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"--out {out_dir} is not a folder", hint="choose another path")
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in _ours(out_dir))
        if foreign:
            raise InputError(
                f"--out {out_dir} holds files that no semobridge export wrote there: {', '.join(foreign[:5])}"
                + (", ..." if len(foreign) > 5 else ""),
                hint="choose a new or empty folder (an earlier export's folder is replaced as a whole)",
            )
    return out_dir


def _move_into(stage: Path, out_dir: Path, written: dict[str, Path]) -> dict[str, Path]:
    """Replace out_dir's contents by the staged export: new artifacts in, stale ones of an earlier export out,
    the manifest last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = _ours(out_dir) - {p.name for p in stage.iterdir()}
    for path in sorted(stage.iterdir(), key=lambda p: p.name == MANIFEST):
        target = out_dir / path.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(path, target)
    for name in stale:
        target = out_dir / name
        shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink(missing_ok=True)
    return {key: out_dir / path.relative_to(stage) for key, path in written.items()}

"""export(): a fitted head and its backbone -> the requested artifacts, all or nothing."""
from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from semobridge import __version__
from semobridge.backbones import Backbone
from semobridge.errors import InputError, SemobridgeError
from semobridge.files import file_sha256, read_text
from semobridge.model import SeMoBridge
from semobridge.validate import image_size, output_dir

from . import openvino_int8
from .formats import DEFAULT_FORMATS, FORMATS, Job, format_names, resolve_formats
from .fused import FusedClassifier
from .metadata import build_metadata
from .preprocess import Preprocess
from .reference import synthetic_images
from .tensorrt import Profile, _import_tensorrt

CHECK_IMAGES = 32  # images of the dataset (or synthetic ones) that measure fp16 drift and int8 agreement
MANIFEST = "manifest.json"
STAGE_MARKER = ".semobridge-export-stage"  # written first into each staging folder: {"pid", "host"} of the export


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
    names = without_absent_openvino_int8(names, formats, log)
    fused = FusedClassifier(head, backbone, input_kind)
    if check_images is None and {"onnx-fp16", "onnx-int8", "openvino-int8"} & set(names):
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
    remove_stale_stages(out_dir)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    (stage / STAGE_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
    try:
        job = Job(fused, build_metadata(fused, fixed_size), stage, stem, fixed_size, profile, list(check_images or []),
                  list(fit_images or []), log, backbone)
        implied = "openvino-int8" not in format_names(formats)  # added by --int8-cpu, not asked for by name
        for name in names:
            log(f"writing {name} ...")
            try:
                job.written[name] = FORMATS[name].write(job)
            except Exception as exc:  # NNCF failing on a graph: the other artifacts are still wanted
                if name != "openvino-int8" or not implied or isinstance(exc, SemobridgeError):
                    raise
                log(f"openvino-int8 skipped: NNCF failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
        write_manifest(stage)
        return _move_into(stage, out_dir, job.written)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def without_absent_openvino_int8(names: list[str], formats: str | Sequence[str], log: Callable[[str], None]) -> list[str]:
    """`names` as they can be written here: without openvino and nncf, the openvino-int8 format that --int8-cpu adds
    is left out with one line saying what to install; asked for by name, it is refused before any work."""
    absent = openvino_int8.missing() if "openvino-int8" in names else None
    if absent is None:
        return names
    if "openvino-int8" in format_names(formats):
        raise InputError(f"the openvino-int8 format cannot be written here: {absent}",
                         hint="install it, or leave the format out")
    log(f"openvino-int8 skipped: {absent}")
    return [n for n in names if n != "openvino-int8"]


def write_manifest(folder: Path) -> Path:
    """MANIFEST (manifest.json): every artifact of the export, its size and SHA-256. It marks the folder
    as ours, so that a later export may replace it as a whole (the files it lists, if they are unchanged)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (MANIFEST, STAGE_MARKER))
    entries = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in files}
    path = folder / MANIFEST
    path.write_text(json.dumps({"semobridge_export": __version__, "files": entries}, indent=2), encoding="utf-8")
    return path


def _ours(out_dir: Path) -> set[str]:
    """Files an earlier export wrote into out_dir and that are unchanged: the names its manifest lists that stay
    inside the folder (relative, no "..", no symbolic link on the way), name a regular file there, and have
    the size and SHA-256 the manifest records (a hand-made manifest cannot make us remove anything else)."""
    try:
        files = json.loads(read_text(out_dir / MANIFEST, "export manifest"))["files"]
        if not isinstance(files, dict):
            return set()
    except (InputError, ValueError, KeyError, TypeError, RecursionError):
        return set()
    ours = set()
    for name, entry in files.items():
        path = _inside(out_dir, name)
        try:
            if (path is not None and isinstance(entry, dict) and entry.get("bytes") == path.stat().st_size
                    and entry.get("sha256") == file_sha256(path, "exported file")):
                ours.add(name)
        except (InputError, OSError):
            continue
    return ours


def _inside(folder: Path, name: object) -> Path | None:
    """folder/name if `name` is a plain relative path to a regular file reached without symbolic links; else None."""
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name or "\0" in name:
        return None
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    path = folder
    for i, part in enumerate(parts):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return None
        if not (stat.S_ISREG(mode) if i == len(parts) - 1 else stat.S_ISDIR(mode)):
            return None  # a symbolic link, a device, ... : not something we wrote
    return path


def _foreign(out_dir: Path, ours: set[str]) -> list[str]:
    """Everything in out_dir (relative names) that is neither the manifest (a regular file) nor one of our
    unchanged files (folders count by what they hold)."""
    found = []
    for path in sorted(out_dir.rglob("*")):  # rglob does not follow symbolic links to folders
        name = path.relative_to(out_dir).as_posix()
        if name in ours or (not path.is_symlink() and (path.is_dir() or name == MANIFEST and path.is_file())):
            continue
        found.append(name)
    return found


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """The output folder may be new, empty, or hold exactly an earlier export, unchanged (which is then replaced
    as a whole): never files of someone else's. Checked before the fit."""
    out_dir = output_dir(out_dir, "--out folder")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"--out {out_dir} is not a folder", hint="choose another path")
        foreign = _foreign(out_dir, _ours(out_dir))
        if foreign:
            raise InputError(
                f"--out {out_dir} holds files that no semobridge export wrote there: {_names(foreign)}",
                hint="choose a new or empty folder (an earlier export's folder is replaced as a whole, if its files "
                     "are as the export wrote them)",
            )
    return out_dir


def _remove(out_dir: Path, top: str, ours: set[str]) -> None:
    """Remove out_dir/top: the manifest, or our unchanged files one by one and then the folders they emptied.
    Anything else stops it with an InputError (someone put it there since the check): nothing of someone
    else's is removed."""
    target = out_dir / top
    if top == MANIFEST and target.is_file() and not target.is_symlink():
        target.unlink()
        return
    for name in sorted(n for n in ours if n == top or n.startswith(top + "/")):
        os.unlink(out_dir / name)
    if target.is_dir() and not target.is_symlink():
        for folder in sorted((p for p in target.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
            _rmdir(folder, out_dir)
        _rmdir(target, out_dir)
    elif target.exists() or target.is_symlink():
        raise InputError(f"--out {out_dir}: {top} is not ours (it appeared or changed during the export); "
                         "it was left alone", hint="move it away and export again")


def _rmdir(folder: Path, out_dir: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        raise InputError(f"--out {out_dir}: {folder.relative_to(out_dir)} holds files that are not ours "
                         "(they appeared during the export); they were left alone",
                         hint="move them away and export again") from None


def _move_into(stage: Path, out_dir: Path, written: dict[str, Path]) -> dict[str, Path]:
    """Replace out_dir's contents by the staged export: new artifacts in, stale ones of an earlier export out,
    the manifest last. Only what the earlier manifest lists, unchanged, is removed (see _ours). A file of someone
    else's that appeared during the export stops it before anything is placed (one in the instant of placing
    stops it there: it is left alone, see _remove)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ours = _ours(out_dir)
    foreign = _foreign(out_dir, ours)
    if foreign:
        raise InputError(f"--out {out_dir} changed during the export: {_names(foreign)} are not files of a semobridge "
                         "export; nothing was placed (the folder is as it was)", hint="move them away and export again")
    staged = [p for p in stage.iterdir() if p.name != STAGE_MARKER]
    tops = {name.split("/")[0] for name in ours} | {MANIFEST}
    for path in sorted(staged, key=lambda p: p.name == MANIFEST):
        if (out_dir / path.name).exists() or (out_dir / path.name).is_symlink():
            _remove(out_dir, path.name, ours)
        os.replace(path, out_dir / path.name)
    for name in sorted(tops - {p.name for p in staged}):
        _remove(out_dir, name, ours)
    return {key: out_dir / path.relative_to(stage) for key, path in written.items()}


def remove_stale_stages(out_dir: Path) -> list[Path]:
    """Remove the staging folders (.OUT.*.partial beside out_dir) that an export to out_dir left when it was
    killed (SIGKILL, power loss): ours only (they hold STAGE_MARKER, written first), of a process of this
    machine that no longer runs. Returns those removed."""
    removed = []
    for stage in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.*.partial"):
        marker = stage / STAGE_MARKER
        if stage.is_symlink() or not stage.is_dir() or marker.is_symlink() or not marker.is_file():
            continue
        try:
            owner = json.loads(read_text(marker, "staging marker"))
            pid, host = int(owner["pid"]), owner["host"]
        except (InputError, ValueError, KeyError, TypeError):
            continue
        if host != socket.gethostname() or _running(pid):
            continue
        shutil.rmtree(stage, ignore_errors=True)
        removed.append(stage)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or no valid pid): leave it
    return True

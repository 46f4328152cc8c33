"""`semobridge-run MODEL IMAGE...`: print the top-k classes per image.

IMAGE may be a file, a directory (every image file in it) or a quoted glob such as 'photos/*.jpg'.
`semobridge-run MODEL clip.mp4` (or rtsp://..., /dev/video0) classifies a video's frames instead: one
JSON line per classified frame (see the video options below).
Exit codes: 0 done, 2 input error, 3 model error, 4 runtime error (docs/errors.md).
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

import click

from . import __version__
from .backends.choice import BACKENDS
from .backends.openvino import PRECISIONS as OPENVINO_PRECISIONS
from .classifier import Classifier, Prediction
from .commandline import command, model_argument, spin_option, threads_option, unknown_option, version_option
from .errors import InputError
from .images import IMAGE_SUFFIXES
from .limits import MAX_ASPECT, MAX_PIXELS, MAX_SIDE
from .video_cli import run_video, video_options, video_source


def load_options(fn):
    """--classes, --no-int8, --threads, --spin and the image limits: Classifier.load's options
    (semobridge-run, semobridge-serve)."""
    for decorate in reversed((
        click.option("--classes", metavar="FILE",
                     help="Class file to use instead of the fitted classes (written by semobridge-classes or save_classes)."),
        click.option("--no-int8", is_flag=True,
                     help="Run MODEL as given; by default, on the CPU, model_int8.onnx beside it runs instead when its "
                          "export measured the same labels as fp32 on >= 99% of the fit images."),
        threads_option,
        spin_option,
        click.option("--max-side", type=int, default=None,
                     help=f"Refuse images whose longest side exceeds this [default: the model's, else {MAX_SIDE}]."),
        click.option("--max-pixels", type=int, default=None,
                     help=f"Refuse images with more pixels than this [default: the model's, else {MAX_PIXELS}]."),
        click.option("--max-aspect", type=float, default=None,
                     help=f"Refuse images whose longest/shortest side exceeds this [default: the model's, else {MAX_ASPECT}]."),
    )):
        fn = decorate(fn)
    return fn


@command("semobridge-run", help=__doc__.replace("`", ""))
@model_argument(metavar="MODEL")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--top-k", type=int, default=5, show_default=True, help="Classes to show per image.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@unknown_option
@click.option("--backend", default="auto", show_default=True, type=click.Choice(list(BACKENDS)),
              help="Inference library (auto: TensorRT for .engine/.plan; for .onnx OpenVINO on CPUs with AMX where the "
                   "export measured it, else ONNX Runtime).")
@click.option("--openvino-precision", default="auto", show_default=True, type=click.Choice(list(OPENVINO_PRECISIONS)),
              help="OpenVINO's precision past the f32 preprocessing (auto: bf16 where the CPU computes it; int8: the static "
                   "int8 IR that semobridge-export --int8-cpu wrote with nncf installed); any but auto runs OpenVINO.")
@click.option("--fast-jpeg", is_flag=True,
              help="Decode JPEG files DCT-scaled (shorter side >= 2x the model's input) before the exact resize: "
                   "several times faster on camera photos, pixels slightly off a full decode.")
@load_options
@video_options
@version_option(__version__)
def cli(model, images, top_k, as_json, unknown, backend, openvino_precision, fast_jpeg, classes, no_int8, threads, spin,
        max_side, max_pixels, max_aspect, every, fps, smooth, video_options) -> int:
    video = video_source(list(images), every, fps, smooth, video_options)
    paths = image_paths(list(images)) if video is None else []
    classifier = Classifier.load(model, backend=backend, intra_op_num_threads=threads, allow_spinning=spin,
                                 prefer_int8=not no_int8, classes=classes, max_side=max_side, max_pixels=max_pixels,
                                 max_aspect=max_aspect, unknown=unknown, fast_jpeg=fast_jpeg,
                                 openvino_precision=openvino_precision)
    if video is not None:
        return run_video(classifier, *video)
    result = classifier.predict(paths, top_k=top_k)
    print(_as_json(paths, result) if as_json else _as_text(paths, result))
    return 0


def image_paths(arguments: list[str]) -> list[str]:
    """Expand directories (their image files, sorted) and globs (their matching image files, sorted)."""
    paths: list[str] = []
    for argument in arguments:
        if Path(argument).is_dir():
            found = sorted(str(p) for p in Path(argument).iterdir() if _is_image_file(p))
            where = f"directory {argument}"
        elif glob.has_magic(argument) and not Path(argument).exists():
            found = sorted(p for p in glob.glob(argument) if _is_image_file(Path(p)))
            where = f"glob {argument!r}"
        else:
            paths.append(argument)
            continue
        if not found:
            raise InputError(f"no image files in {where}",
                             hint=f"image files end in {', '.join(IMAGE_SUFFIXES)} (any case)")
        paths += found
    return paths


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _as_json(images: list[str], result: Prediction) -> str:
    rows = [{"image": image, "label": result.class_names[i], "index": int(result.labels[i]), "known": bool(result.known[i]),
             "probability": float(result.top_k.probabilities[i][0]), "open_set_score": float(result.open_set_score[i]),
             "top_k": [{"index": int(c), "class": name, "score": float(s), "probability": float(p)}
                       for c, name, s, p in zip(result.top_k.indices[i], result.top_k.names[i], result.top_k.scores[i],
                                                result.top_k.probabilities[i])],
             "probabilities": [float(p) for p in result.probabilities[i]]}
            for i, image in enumerate(images)]
    return json.dumps(rows, indent=2)


def _as_text(images: list[str], result: Prediction) -> str:
    lines = []
    for i, image in enumerate(images):
        lines.append(image if result.known[i] else f"{image}  unknown")
        lines += [f"  {s:.4f}  {p:6.1%}  {name}" for name, s, p in
                  zip(result.top_k.names[i], result.top_k.scores[i], result.top_k.probabilities[i])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The console script; returns the exit code (docs/errors.md)."""
    return cli.main(argv, standalone_mode=False)


if __name__ == "__main__":
    sys.exit(main())

"""`semobridge-run MODEL IMAGE...`: print the top-k classes per image.

IMAGE may be a file, a directory (every image file in it) or a quoted glob such as 'photos/*.jpg'.
`semobridge-run MODEL clip.mp4` (or rtsp://..., /dev/video0) classifies a video's frames instead: one
JSON line per classified frame (see the video options below).
Exit codes: 0 done, 2 input error, 3 model error, 4 runtime error (docs/errors.md).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

from . import __version__
from .backends.choice import BACKENDS
from .classifier import Classifier, Prediction
from .errors import InputError, SemobridgeError, report
from .images import IMAGE_SUFFIXES
from .limits import MAX_ASPECT, MAX_PIXELS, MAX_SIDE, MAX_THREADS
from .video_cli import add_video_options, run_video, video_source


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semobridge-run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="exported .onnx model or TensorRT .engine/.plan")
    parser.add_argument("images", nargs="+",
                        help="image files, directories (their image files, sorted, not recursive) or quoted globs")
    parser.add_argument("--top-k", type=int, default=5, help="classes to show per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--backend", default="auto", choices=list(BACKENDS),
                        help="inference library (default auto: TensorRT for .engine/.plan; for .onnx OpenVINO on CPUs with "
                             "AMX where the export measured it, else ONNX Runtime)")
    parser.add_argument("--fast-jpeg", action="store_true",
                        help="decode JPEG files DCT-scaled (shorter side >= 2x the model's input) before the exact resize: "
                             "several times faster on camera photos, pixels slightly off a full decode")
    add_load_options(parser)
    add_video_options(parser)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def add_load_options(parser: argparse.ArgumentParser, spinning: bool = True) -> None:
    """--classes, --unknown, --no-int8, --threads, spinning and the image limits: Classifier.load's options
    (semobridge-run, semobridge-serve).

    spinning: the default for ONNX Runtime's intra-op spinning; the option offered turns it the other way
    (--no-spinning, dest no_spinning; or --spinning, dest spinning).
    """
    parser.add_argument("--classes", metavar="FILE",
                        help="class file to use instead of the fitted classes (written by semobridge-classes or save_classes)")
    parser.add_argument("--unknown", default="auto", metavar="auto|off|VALUE", type=unknown_option,
                        help="answer 'unknown' for an image whose top calibrated probability is below the model's "
                             "calibrated threshold (auto, the default), never (off), or below VALUE in [0, 1]")
    parser.add_argument("--no-int8", action="store_true",
                        help="run MODEL as given; by default, on the CPU, model_int8.onnx beside it runs instead when its "
                             "export measured the same labels as fp32 on >= 99%% of the fit images")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"ONNX Runtime intra-op threads, 0..{MAX_THREADS} (default 0: one per core)")
    if spinning:
        parser.add_argument("--no-spinning", action="store_true",
                            help="let ONNX Runtime's CPU threads sleep between calls instead of spinning")
    else:
        parser.add_argument("--spinning", action="store_true",
                            help="let ONNX Runtime's CPU threads spin between calls (default: they sleep, leaving "
                                 "the cores to the server's network threads)")
    parser.add_argument("--max-side", type=int, default=None,
                        help=f"refuse images whose longest side exceeds this (default: the model's, else {MAX_SIDE})")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help=f"refuse images with more pixels than this (default: the model's, else {MAX_PIXELS})")
    parser.add_argument("--max-aspect", type=float, default=None,
                        help=f"refuse images whose longest/shortest side exceeds this (default: the model's, "
                             f"else {MAX_ASPECT})")


def unknown_option(text: str) -> str | float | None:
    """--unknown: "auto", "off" (None) or a threshold (checked by Classifier.load)."""
    if text in ("auto", "off"):
        return None if text == "off" else text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, off or a number in [0, 1]") from None


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
             "probability": float(result.top_k.probabilities[i][0]),
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
    args = _parser().parse_args(argv)
    try:
        video = video_source(args)
        images = image_paths(args.images) if video is None else []
        classifier = Classifier.load(args.model, backend=args.backend, intra_op_num_threads=args.threads,
                                     allow_spinning=not args.no_spinning, prefer_int8=not args.no_int8,
                                     classes=args.classes, max_side=args.max_side,
                                     max_pixels=args.max_pixels, max_aspect=args.max_aspect, unknown=args.unknown,
                                     fast_jpeg=args.fast_jpeg)
        if video is not None:
            return run_video(classifier, *video)
        result = classifier.predict(images, top_k=args.top_k)
    except SemobridgeError as exc:
        return report("semobridge-run", exc)
    print(_as_json(images, result) if args.json else _as_text(images, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

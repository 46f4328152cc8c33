"""`semobridge-run MODEL IMAGE...`: print the top-k classes per image."""

from __future__ import annotations

import argparse
import json
import sys

from .classifier import Classifier, Prediction


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semobridge-run", description=__doc__)
    parser.add_argument("model", help="exported .onnx model or TensorRT .engine/.plan")
    parser.add_argument("images", nargs="+", help="image files (needs Pillow)")
    parser.add_argument("--top-k", type=int, default=5, help="classes to show per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--classes", metavar="FILE", help="class file to use instead of the fitted classes (semobridge-classes)")
    parser.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"])
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: its own)")
    parser.add_argument("--no-spinning", action="store_true",
                        help="let ONNX Runtime's CPU threads sleep between calls instead of spinning")
    return parser


def _as_json(images: list[str], result: Prediction) -> str:
    rows = [{"image": image, "label": result.class_names[i], "index": int(result.labels[i]),
             "top_k": [{"index": int(c), "class": name, "score": float(s)}
                       for c, name, s in zip(result.top_k.indices[i], result.top_k.names[i], result.top_k.scores[i])]}
            for i, image in enumerate(images)]
    return json.dumps(rows, indent=2)


def _as_text(images: list[str], result: Prediction) -> str:
    lines = []
    for i, image in enumerate(images):
        lines.append(image)
        lines += [f"  {s:.4f}  {name}" for name, s in zip(result.top_k.names[i], result.top_k.scores[i])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        classifier = Classifier.load(args.model, backend=args.backend, intra_op_num_threads=args.threads,
                                     allow_spinning=not args.no_spinning, classes=args.classes)
        result = classifier.predict(args.images, top_k=args.top_k)
    except ValueError as exc:  # InputError, ModelError, and bad settings such as --threads -1
        print(f"semobridge-run: error: {exc}", file=sys.stderr)
        return 2
    print(_as_json(args.images, result) if args.json else _as_text(args.images, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

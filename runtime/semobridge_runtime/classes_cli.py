"""`semobridge-classes`: list and edit class files (add, remove, rename classes of an exported model).

    semobridge-classes add shop.classes "blue mug" mug1.jpg mug2.jpg --model model.onnx
    semobridge-classes add shop.classes umbrella --prompt "a photo of an umbrella." --model model.onnx
    semobridge-classes remove shop.classes coat --model model.onnx
    semobridge-classes rename shop.classes bag handbag --model model.onnx
    semobridge-classes list shop.classes
    semobridge-run model.onnx --classes shop.classes photo.jpg

A class file that does not exist yet starts as the model's fitted classes. Every edit is written
atomically: if anything fails, the file stays as it was.
Exit codes: 0 done, 2 input error, 3 model error, 4 runtime error (docs/errors.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import tensorfile
from .classes import FORMAT, NAMES_TENSOR
from .classifier import Classifier
from .errors import InputError, ModelError, SemobridgeError, report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semobridge-classes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="enrol a class from a few images of it, or from its name and prompts alone")
    add.add_argument("file", help="class file (created from the model's classes if absent)")
    add.add_argument("name", help="the class name (also what the prompts say)")
    add.add_argument("images", nargs="*", help="image files of the class (needs Pillow); none: a class from its name "
                     "(and --prompt) alone")
    add.add_argument("--prompt", action="append", dest="prompts",
                     help="a sentence describing the class (repeatable); default: the fit's templates with NAME")
    remove = commands.add_parser("remove", help="remove classes")
    remove.add_argument("file")
    remove.add_argument("names", nargs="+")
    rename = commands.add_parser("rename", help="rename a class")
    rename.add_argument("file")
    rename.add_argument("old")
    rename.add_argument("new")
    for command in (add, remove, rename):
        command.add_argument("--model", required=True, help="the exported model (.onnx) the class file is for")
    listing = commands.add_parser("list", help="print the class names")
    listing.add_argument("file")
    return parser


def _list(path: str) -> str:
    tensors, meta = tensorfile.read(path, "class file")
    if meta.get("format") != FORMAT or NAMES_TENSOR not in tensors:
        raise ModelError(f"{path} is not a semobridge class file")
    names = bytes(tensors[NAMES_TENSOR]).decode("utf-8", errors="replace").split("\n")
    head = f"{path}: {len(names)} classes for {meta.get('backbone')} (weights {meta.get('weights_hash')}, bridge {meta.get('bridge_hash')})"
    return "\n".join([head, *names])


def _edit(args: argparse.Namespace) -> str:
    path = Path(args.file)
    if args.command == "remove":
        twice = sorted({n for n in args.names if args.names.count(n) > 1})
        if twice:
            raise InputError(f"{', '.join(map(repr, twice))} given more than once", hint="name each class to remove once")
    classifier = Classifier.load(args.model, classes=path if path.exists() else None)
    if args.command == "add":
        classifier.add_class(args.name, args.images, prompts=args.prompts)
        done = f"added {args.name!r} from " + (f"{len(args.images)} image(s)" if args.images else "its name alone"
                                               if not args.prompts else f"{len(args.prompts)} prompt(s) alone")
    elif args.command == "remove":
        for name in args.names:
            classifier.remove_class(name)
        done = f"removed {', '.join(repr(n) for n in args.names)}"
    else:
        classifier.rename_class(args.old, args.new)
        done = f"renamed {args.old!r} to {args.new!r}"
    classifier.save_classes(path)
    return f"{done}: {path} has {len(classifier.class_names)} classes"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(_list(args.file) if args.command == "list" else _edit(args))
    except SemobridgeError as exc:
        return report("semobridge-classes", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())

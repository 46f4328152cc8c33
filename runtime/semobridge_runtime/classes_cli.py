"""`semobridge-classes`: list and edit class files (add, remove, rename classes of an exported model).

\b
    semobridge-classes add model.onnx shop.classes "blue mug" mug1.jpg mug2.jpg
    semobridge-classes add model.onnx shop.classes umbrella --prompt "a photo of an umbrella."
    semobridge-classes remove model.onnx shop.classes coat
    semobridge-classes rename model.onnx shop.classes bag handbag
    semobridge-classes list shop.classes
    semobridge-run model.onnx --classes shop.classes photo.jpg

A class file that does not exist yet starts as the model's fitted classes. Every edit is written
atomically: if anything fails, the file stays as it was.
Exit codes: 0 done, 2 input error, 3 model error, 4 runtime error (docs/errors.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__, tensorfile
from .classes import FORMAT, NAMES_TENSOR
from .commandline import group, model_argument, version_option
from .errors import InputError, ModelError


class _ModelFirst(click.Command):
    """An edit command whose MODEL comes first; the old spelling `... --model MODEL` still works (hidden)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = list(args)
        for i, arg in enumerate(args):
            if arg == "--":
                break
            if arg == "--model" and i + 1 < len(args):
                args = [args[i + 1], *args[:i], *args[i + 2:]]
                break
            if arg.startswith("--model="):
                args = [arg.partition("=")[2], *args[:i], *args[i + 1:]]
                break
        return super().parse_args(ctx, args)


@group("semobridge-classes", help=__doc__.replace("`", ""))
@version_option(__version__)
def cli() -> None:
    pass


def _edit_command(name: str, help: str):
    def decorate(fn):
        fn = click.argument("file")(fn)
        fn = model_argument(metavar="MODEL")(fn)
        return cli.command(name, cls=_ModelFirst, help=help + " MODEL: the exported model (.onnx) the class file is "
                           "for; FILE: the class file (created from the model's classes if absent).")(fn)
    return decorate


@_edit_command("add", "Enrol a class from a few images of it, or from its name and prompts alone.")
@click.argument("name")
@click.argument("images", nargs=-1)
@click.option("--prompt", "prompts", multiple=True,
              help="A sentence describing the class (repeatable) [default: the fit's templates with NAME].")
def add_cmd(model: str, file: str, name: str, images: tuple[str, ...], prompts: tuple[str, ...]) -> None:
    clf, path = _load(model, file)
    clf.add_class(name, list(images), prompts=list(prompts) or None)
    done = f"added {name!r} from " + (f"{len(images)} image(s)" if images else "its name alone"
                                      if not prompts else f"{len(prompts)} prompt(s) alone")
    _save(clf, path, done)


@_edit_command("remove", "Remove classes.")
@click.argument("names", nargs=-1, required=True)
def remove_cmd(model: str, file: str, names: tuple[str, ...]) -> None:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"{', '.join(map(repr, twice))} given more than once", hint="name each class to remove once")
    clf, path = _load(model, file)
    for name in names:
        clf.remove_class(name)
    _save(clf, path, f"removed {', '.join(repr(n) for n in names)}")


@_edit_command("rename", "Rename a class.")
@click.argument("old")
@click.argument("new")
def rename_cmd(model: str, file: str, old: str, new: str) -> None:
    clf, path = _load(model, file)
    clf.rename_class(old, new)
    _save(clf, path, f"renamed {old!r} to {new!r}")


@cli.command("list")
@click.argument("file")
def list_cmd(file: str) -> None:
    """Print the class names of a class file."""
    print(_list(file))


def _load(model: str, file: str):
    from .classifier import Classifier

    path = Path(file)
    return Classifier.load(model, classes=path if path.exists() else None), path


def _save(clf, path: Path, done: str) -> None:
    clf.save_classes(path)
    print(f"{done}: {path} has {len(clf.class_names)} classes")


def _list(path: str) -> str:
    tensors, meta = tensorfile.read(path, "class file")
    if meta.get("format") != FORMAT or NAMES_TENSOR not in tensors:
        raise ModelError(f"{path} is not a semobridge class file")
    names = bytes(tensors[NAMES_TENSOR]).decode("utf-8", errors="replace").split("\n")
    head = f"{path}: {len(names)} classes for {meta.get('backbone')} (weights {meta.get('weights_hash')}, bridge {meta.get('bridge_hash')})"
    return "\n".join([head, *names])


def main(argv: list[str] | None = None) -> int:
    """The console script; returns the exit code (docs/errors.md)."""
    return cli.main(argv, standalone_mode=False)


if __name__ == "__main__":
    sys.exit(main())

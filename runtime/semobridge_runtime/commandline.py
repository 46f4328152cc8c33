"""One command-line convention for every semobridge command (semobridge, semobridge-export,
semobridge-build-engine, semobridge-run, semobridge-classes, semobridge-eval, semobridge-serve).

The framework is click, for all of them. The library's commands (`semobridge` with its subcommands,
`semobridge-export`, `semobridge-build-engine`: about two thirds of the options, shared option sets,
`ctx.get_parameter_source`) were click already, and click is pure Python with no dependencies of its
own, imports in about 20 ms and is installed with the library anyway; rewriting the four smaller runtime
commands was the smaller change. argparse would have spared the runtime one small dependency, at
the price of rewriting the larger half and of re-implementing typed options (ranges, choices,
paths, flag pairs) that click has.

What every command gets from here, once:
- `-h` and `--help`, and `--version`;
- one error reporter (`errors.report`): `PROG: error: <message>`, then `hint: <hint>`, on stderr, and
  the exit code of docs/errors.md: 2 input (usage errors of the parser too: an unknown option, a
  missing argument), 3 model, 4 runtime; Ctrl-C "interrupted" and 130, SIGTERM 143;
- the MODEL argument (`model_argument`): a model file that is missing, unreadable or not a regular
  file is a model error (3) before any work;
- a reader of stdout that goes away (`| head -1`) ends the command quietly with 141 (128 + SIGPIPE),
  as other Unix tools do, after clean-up;
- the options several commands share, with one default: --threads, --spin, --unknown, -o/--out.
Old spellings stay as hidden aliases (`Option(..., aliases=...)`): --output, --spinning, --no-spinning,
and semobridge-classes' --model.
"""

from __future__ import annotations

import os
import signal
import threading
import sys
import warnings
from typing import Any, Callable

import click

from .errors import BackendError, InputError, ModelError, SemobridgeError, report
from .files import GRAPH_BYTES, check_regular
from .limits import MAX_THREADS

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
INTERRUPTED_EXIT = 128 + signal.SIGINT  # 130, as a shell reports a command ended by Ctrl-C
PIPE_EXIT = 128 + signal.SIGPIPE  # 141, as a shell reports a command whose reader went away
_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


def as_error(exc: BaseException) -> SemobridgeError | None:
    """The error model's view of an exception, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, SemobridgeError):
        return exc
    if isinstance(exc, click.UsageError):
        path = exc.ctx.command_path if exc.ctx is not None else None
        return InputError(exc.format_message(), hint=f"`{path} -h` lists the options" if path else None)
    if isinstance(exc, click.ClickException):  # e.g. click.FileError
        return InputError(exc.format_message())
    if isinstance(exc, PermissionError):
        return InputError(f"permission denied: {exc.filename or exc}", hint="choose a path you can write to")
    if isinstance(exc, FileNotFoundError):
        return InputError(f"no such file or folder: {exc.filename or exc}")
    if isinstance(exc, OSError) and exc.errno is not None:  # disk full, read-only file system, ...
        return BackendError(f"{exc.strerror}: {exc.filename or ''}".rstrip(": "))
    if isinstance(exc, MemoryError):
        return BackendError("out of memory", hint="use fewer images per batch, or a machine with more memory")
    return None


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds: temporary files and staged exports are removed


def _quiet_stdout() -> None:
    """After the reader of stdout went away: what is still buffered goes nowhere, and no error at exit."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (a test's capture)
        pass


class _Convention:
    """What our click commands and groups do instead of click's own `main` (mixed into Command and Group)."""

    def main(self, args: list[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> int:
        """Run the command; returns its exit code, or exits with it when `standalone_mode` (a console script).
        Unlike click's main: a closed stdout exits 141, not 1, also while printing --help; Ctrl-C says
        "interrupted" and exits 130, not "Aborted!" and 1 (a bug's code); errors go through one reporter."""
        prog = prog_name or self.name  # type: ignore[attr-defined]
        self._main_shell_completion(extra, prog, complete_var)  # type: ignore[attr-defined]  # click's, as in its main

        def call() -> Any:
            try:
                with self.make_context(prog, list(sys.argv[1:] if args is None else args), **extra) as ctx:  # type: ignore[attr-defined]
                    return self.invoke(ctx)  # type: ignore[attr-defined]
            except click.exceptions.Exit as done:  # --help, --version
                return done.exit_code

        code = run(call, prog)
        if standalone_mode:
            sys.exit(code)
        return code


def run(call: Callable[[], Any], prog: str) -> int:
    """Call a command; errors of our model are reported once (errors.report) and become exit codes."""
    # handlers belong to the main thread (an application may call main() from another one: then it keeps its own)
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _terminate)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            result = call()
        sys.stdout.flush()  # a closed pipe shows here when the output was buffered
        return result if isinstance(result, int) else 0
    except BrokenPipeError:  # the reader of stdout went away (| head): quietly, as other Unix tools
        _quiet_stdout()
        return PIPE_EXIT
    except _NO_ARGS as exc:  # a group called without a command (click >= 8.2): its help, and 2
        print(exc.format_message(), file=sys.stderr)
        return InputError.exit_code
    except (KeyboardInterrupt, click.Abort):
        print("interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as exc:
        error = as_error(exc)
        if error is None:
            raise
        return report(prog, error)


class Command(_Convention, click.Command):
    """A click command that follows the convention (module docstring)."""


class Group(_Convention, click.Group):
    """A click group that follows the convention; its subcommands are plain click commands."""


def command(name: str, **kwargs: Any) -> Callable:
    """@command("semobridge-run"): a top-level command (-h, one error reporter, exit codes)."""
    return click.command(name, cls=Command, context_settings=CONTEXT, **kwargs)


def group(name: str, **kwargs: Any) -> Callable:
    """@group("semobridge"): a top-level group; subcommands inherit -h."""
    return click.group(name, cls=Group, context_settings=CONTEXT, **kwargs)


def version_option(version: str) -> Callable:
    return click.version_option(version, "--version", message="%(prog)s %(version)s")


class Option(click.Option):
    """A click option with old spellings that still work but are not shown (`aliases`: e.g. "--output",
    or "--spinning/--no-spinning" for a flag pair)."""

    def __init__(self, param_decls: list[str], aliases: tuple[str, ...] = (), **kwargs: Any):
        super().__init__([*param_decls, *aliases], **kwargs)
        self.shown = [o for decl in param_decls for o in decl.split("/") if o.startswith("-")]

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        opts, secondary = self.opts, self.secondary_opts
        self.opts = [o for o in opts if o in self.shown]
        self.secondary_opts = [o for o in secondary if o in self.shown]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts, self.secondary_opts = opts, secondary


def option(*param_decls: str, **kwargs: Any) -> Callable:
    """click.option with our Option class (for `aliases=`)."""
    return click.option(*param_decls, cls=Option, **kwargs)


_OPTIONS_ONLY = "semobridge.options_only"  # ctx.meta key: parse_options, which does not open files


class ModelFile(click.ParamType):
    """A model file argument: missing, unreadable, too large or not a regular file is a model error (exit 3),
    whatever the command. The value stays the path as given (a str)."""

    name = "model"

    def __init__(self, what: str = "model file"):
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if ctx is None or not ctx.meta.get(_OPTIONS_ONLY):
            check_regular(value, self.what, GRAPH_BYTES, ModelError)
        return str(value)


def parse_options(cmd: click.Command, argv: list[str]) -> dict[str, Any]:
    """The parameters of a command line as `cmd` parses them (usage errors raise), without looking at the model
    file it names: for checking command lines written elsewhere (deploy manifests)."""
    ctx = cmd.context_class(cmd, info_name=cmd.name)
    ctx.meta[_OPTIONS_ONLY] = True
    with ctx.scope(cleanup=False):
        cmd.parse_args(ctx, list(argv))
    return ctx.params


def model_argument(name: str = "model", what: str = "model file", **kwargs: Any) -> Callable:
    """The MODEL positional, first on every command that reads a model (a ModelFile)."""
    return click.argument(name, type=ModelFile(what), **kwargs)


def out_option(help: str, **kwargs: Any) -> Callable:
    """-o/--out: where a command writes its result (--output, the old spelling, still works)."""
    return option("-o", "--out", "out", aliases=("--output",), type=click.Path(dir_okay=kwargs.pop("dir_okay", False),
                  file_okay=kwargs.pop("file_okay", True)), help=help, **kwargs)


threads_option = click.option(  # its range is checked by Classifier.load
    "--threads", type=int, default=None,
    help=f"ONNX Runtime intra-op threads (per model instance), 0..{MAX_THREADS} [default: 0, one per core].")

spin_option = option(
    "--spin/--no-spin", "spin", aliases=("--spinning/--no-spinning",), default=False, show_default=True,
    help="Let ONNX Runtime's CPU threads spin between calls (lower latency when calls follow each other closely, "
         "but the cores stay busy); by default they sleep.")


class _Unknown(click.ParamType):
    """--unknown: "auto", "off" (None) or a threshold in [0, 1] (checked by Classifier.load)."""

    name = "auto|off|VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str | float | None:
        if not isinstance(value, str) or value == "auto":
            return value
        if value == "off":
            return None
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is not auto, off or a number in [0, 1]", param, ctx)


unknown_option = click.option(
    "--unknown", type=_Unknown(), default="auto", show_default=True,
    help="Answer 'unknown' for an image whose abstention score (the model's choice: its top calibrated probability, "
         "or MCM) is below the model's calibrated threshold (auto), never (off), or below VALUE in [0, 1].")

"""What every click command of ours shares: one error decorator (docs/errors.md), warnings as one
plain line, clean-up on SIGTERM, and --version."""
from __future__ import annotations

import functools
import signal
import warnings
from typing import Callable

import click

from . import __version__
from .errors import BackendError, InputError, SemobridgeError


class CommandError(click.ClickException):
    """A SemobridgeError as click shows it: `Error: <message>`, then `hint: <hint>`, exit code by kind."""

    def __init__(self, error: SemobridgeError):
        super().__init__(str(error))
        self.exit_code = error.exit_code
        self.hint = error.hint

    def format_message(self) -> str:
        return self.message + (f"\nhint: {self.hint}" if self.hint else "")


def _as_semobridge_error(exc: BaseException) -> SemobridgeError | None:
    """The error model's view of an exception, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, SemobridgeError):
        return exc
    if isinstance(exc, PermissionError):
        return InputError(f"permission denied: {exc.filename or exc}", hint="choose a path you can write to")
    if isinstance(exc, FileNotFoundError):
        return InputError(f"no such file or folder: {exc.filename or exc}")
    if isinstance(exc, OSError) and exc.errno is not None:  # disk full, read-only file system, ...
        return BackendError(f"{exc.strerror}: {exc.filename or ''}".rstrip(": "))
    if isinstance(exc, MemoryError):
        return BackendError("out of memory", hint="use fewer images per batch, or a machine with more memory")
    return None


INTERRUPTED_EXIT = 128 + signal.SIGINT  # 130, as a shell reports a command ended by Ctrl-C


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds: temporary files and staged exports are removed


def command(fn: Callable) -> Callable:
    """Decorate a click command (below @click.command): errors of our model exit with their code and a
    hint, warnings print as one line, SIGTERM cleans up like Ctrl-C, and Ctrl-C says "interrupted" and exits 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _one_line_warning
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _terminate)
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:  # Ctrl-C: not click's "Aborted!" and exit 1, which is for bugs
            click.echo("interrupted", err=True)
            raise SystemExit(INTERRUPTED_EXIT) from None
        except (click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:
            error = _as_semobridge_error(exc)
            if error is None:
                raise
            raise CommandError(error) from None

    return wrapper


def version_option(fn: Callable) -> Callable:
    return click.version_option(__version__, message="%(prog)s %(version)s")(fn)


"""The error model, mirrored from semobridge.errors (the runtime depends on nothing of ours).

Three kinds, each with a Python class, C codes (semobridge.h) and a command-line exit code;
`ERROR_TABLE` lists them, and a test keeps it equal to semobridge.errors, semobridge.h and
docs/errors.md. An input error is fixed by changing what was passed, a model error by using
another model file, a runtime error comes from the machine or the inference library.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

INPUT_EXIT, MODEL_EXIT, BACKEND_EXIT = 2, 3, 4


class SemobridgeError(Exception):
    """Base class: `str(exc)` says what is wrong; `hint` (optional) says what to do about it."""

    kind = "error"
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class InputError(SemobridgeError, ValueError):
    """What was passed cannot be used: images, paths, arguments, settings."""

    kind = "input error"
    exit_code = INPUT_EXIT


class ModelError(SemobridgeError, ValueError):
    """The model file is missing, unreadable, not a semobridge export, or the wrong variant."""

    kind = "model error"
    exit_code = MODEL_EXIT


class BackendError(SemobridgeError, RuntimeError):
    """The machine or the inference library failed (ONNX Runtime, CUDA, TensorRT, memory)."""

    kind = "runtime error"
    exit_code = BACKEND_EXIT


class ErrorKind(NamedTuple):
    """One row of the error table."""

    kind: str
    python: type[SemobridgeError]
    c_codes: dict[str, int]  # SB_E* name -> value in semobridge.h
    exit_code: int


ERROR_TABLE = (
    ErrorKind(InputError.kind, InputError, {"SB_EINVAL": -1}, InputError.exit_code),
    ErrorKind(ModelError.kind, ModelError, {"SB_EMODEL": -2}, ModelError.exit_code),
    ErrorKind(BackendError.kind, BackendError, {"SB_ERUNTIME": -3, "SB_ENOMEM": -4}, BackendError.exit_code),
)


def report(prog: str, error: SemobridgeError) -> int:
    """How a command line shows an error: `PROG: error: <message on one line>`, then `hint: <hint>`, on stderr;
    returns the exit code of its kind."""
    message = " ".join(str(error).splitlines())  # one line, whatever the inference library said
    print(f"{prog}: error: {message}", file=sys.stderr)
    if error.hint:
        print(f"hint: {error.hint}", file=sys.stderr)
    return error.exit_code

"""One error model for every entry point: three kinds, each with a Python class, a C code and an exit code.

| kind          | Python (library / runtime)        | C (semobridge.h)          | exit code |
|---------------|-----------------------------------|---------------------------|-----------|
| input error   | InputError (a ValueError)         | SB_EINVAL                 | 2         |
| model error   | ModelError (a ValueError)         | SB_EMODEL                 | 3         |
| runtime error | BackendError (a RuntimeError)     | SB_ERUNTIME, SB_ENOMEM    | 4         |

An input error is fixed by changing what was passed (arguments, data, images, paths); a model
error by using another model file (re-fit, re-export, the right backbone); a runtime error comes
from the machine or the inference library (ONNX Runtime, CUDA, TensorRT, out of memory).
`semobridge_runtime.errors` mirrors this table (it depends on nothing of ours); a test keeps the
two, the C header and docs/errors.md in agreement.
"""
from __future__ import annotations

INPUT_EXIT, MODEL_EXIT, BACKEND_EXIT = 2, 3, 4


class SemobridgeError(Exception):
    """Base class: `str(exc)` says what is wrong; `hint` (optional) says what to do about it."""

    kind = "error"
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class InputError(SemobridgeError, ValueError):
    """What was passed cannot be used (arguments, data, images, output paths)."""

    kind = "input error"
    exit_code = INPUT_EXIT


class ModelError(SemobridgeError, ValueError):
    """The model file is missing, unreadable, not ours, or made for another backbone."""

    kind = "model error"
    exit_code = MODEL_EXIT


class BackendError(SemobridgeError, RuntimeError):
    """The machine or the inference library failed (ONNX Runtime, CUDA, TensorRT, memory)."""

    kind = "runtime error"
    exit_code = BACKEND_EXIT

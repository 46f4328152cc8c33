"""One error model for every entry point: three kinds, each with a Python class, a C code and an exit code.

| kind          | Python (library / runtime)        | C (semobridge.h)          | exit code |
|---------------|-----------------------------------|---------------------------|-----------|
| input error   | InputError (a ValueError)         | SB_EINVAL                 | 2         |
| model error   | ModelError (a ValueError)         | SB_EMODEL                 | 3         |
| runtime error | BackendError (a RuntimeError)     | SB_ERUNTIME, SB_ENOMEM    | 4         |

An input error is fixed by changing what was passed (arguments, data, images, paths); a model
error by using another model file (re-fit, re-export, the right backbone); a runtime error comes
from the machine or the inference library (ONNX Runtime, CUDA, TensorRT, out of memory).
The classes are `semobridge_runtime.errors`' own (the library depends on the torch-free runtime, never
the reverse), so an error raised by a shared reader is the same class here; a test keeps the table, the C
header and docs/errors.md in agreement.
"""
from __future__ import annotations

from semobridge_runtime.errors import (BACKEND_EXIT, INPUT_EXIT, MODEL_EXIT, BackendError, InputError, ModelError,
                                       SemobridgeError)

__all__ = ["BACKEND_EXIT", "INPUT_EXIT", "MODEL_EXIT", "BackendError", "InputError", "ModelError", "SemobridgeError"]

"""safetensors files in numpy (read and atomic write): the model's head and class files.

Layout: an 8-byte little-endian header length n, n bytes of JSON header (name -> dtype, shape,
data_offsets into the data block; "__metadata__": string -> string), then the data block of
raw little-endian tensors. docs/classes.md documents the class files written here byte by byte.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import InputError, ModelError

DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8"), "U8": np.dtype("u1")}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
ALIGN = 8  # the header is padded with spaces to a multiple of 8 bytes, so tensors start aligned


def read(path: str | os.PathLike, what: str = "file") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors (read-only arrays) and string metadata of a safetensors file; ModelError if it is
    missing, truncated or malformed (`what` names the file's role in messages)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    bad = f"{what} {path} is truncated or not a safetensors file"
    if len(data) < 8:
        raise ModelError(f"{bad} ({len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ModelError(f"{bad} (its header claims {n} bytes, the file has {len(data) - 8} after the length)")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("malformed header")
        body = memoryview(data)[8 + n :]
        tensors = {name: _tensor(spec, body) for name, spec in header.items()}
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ModelError(f"{bad} ({exc})") from exc
    return tensors, dict(meta)


def _tensor(spec: dict, body: memoryview) -> np.ndarray:
    dtype = DTYPES[spec["dtype"]]
    shape = tuple(int(d) for d in spec["shape"])
    begin, end = (int(v) for v in spec["data_offsets"])
    if not 0 <= begin <= end <= len(body) or end - begin != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise ValueError(f"tensor data [{begin}, {end}) does not fit the shape {list(shape)} or the file")
    array = np.frombuffer(body, dtype, count=(end - begin) // dtype.itemsize, offset=begin).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def encode(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """The bytes of a safetensors file: tensors in the given order, header keys in that order after
    "__metadata__", compact ASCII JSON padded with spaces to a multiple of 8 bytes."""
    header: dict = {"__metadata__": dict(metadata)}
    blobs, offset = [], 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        blob = array.astype(dtype, copy=False).tobytes()
        header[name] = {"dtype": NAMES[np.dtype(dtype)], "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * (-(8 + len(text)) % ALIGN)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file beside it: on any failure the old file (if
    any) stays as it was and no temporary file is left. InputError if the target cannot be written."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}; nothing was changed there") from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path

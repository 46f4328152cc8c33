"""safetensors files in numpy (read and atomic write): the model's head and class files.

Layout: an 8-byte little-endian header length n, n bytes of JSON header (name -> dtype, shape,
data_offsets into the data block; "__metadata__": string -> string), then the data block of
raw little-endian tensors. docs/classes.md documents the class files written here byte by byte.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from . import files
from .errors import ModelError

DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8"), "U8": np.dtype("u1")}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
ALIGN = 8  # the header is padded with spaces to a multiple of 8 bytes, so tensors start aligned
HEADER_MAX = 100_000_000  # bytes: safetensors' own limit on the JSON header (the C reader's MAX_HEADER)


class Malformed(ModelError):
    """A file whose bytes are not a safetensors file (truncated or malformed); `reason` says where."""

    def __init__(self, message: str, reason: str, hint: str | None = None):
        super().__init__(message, hint)
        self.reason = reason


def read(path: str | os.PathLike, what: str = "file",
         limit: int = files.MODEL_BYTES) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors (read-only arrays) and string metadata of a safetensors file, every byte checked; ModelError if
    it is missing, not a regular file, over `limit` bytes (files.MODEL_BYTES), truncated, malformed (tensor
    offsets outside the file, shapes that do not fit them) or holds NaN or infinite values (`what` names the
    file's role in messages; Malformed for bytes that are not a safetensors file)."""
    with files.open_regular(path, what, limit, ModelError) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            data = f.read(8)
            n = int.from_bytes(data, "little") if len(data) == 8 else HEADER_MAX + 1
            if n <= HEADER_MAX:  # else refused by parse, before reading on
                data += f.read(size - 8)  # size <= limit: checked by open_regular
        except OSError as exc:
            raise ModelError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        tensors, meta = parse(data)
    except ValueError as exc:
        raise Malformed(f"{what} {path} is truncated or not a safetensors file ({exc})", str(exc),
                        hint=f"the {what} is damaged: write it again") from None
    bad = [name for name, array in tensors.items() if array.dtype.kind == "f" and not np.isfinite(array).all()]
    if bad:
        raise ModelError(f"{what} {path} holds NaN or infinite values ({', '.join(bad)})",
                         hint=f"the {what} is damaged: write it again")
    return tensors, meta


def split(data: bytes) -> tuple[bytes, memoryview]:
    """(the JSON header's bytes, the data block) of a safetensors file's bytes; ValueError if the length does not fit."""
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes")
    n = int.from_bytes(data[:8], "little")
    if n > HEADER_MAX:
        raise ValueError(f"a header of {n} bytes, over safetensors' limit of {HEADER_MAX}")
    if n > len(data) - 8:
        raise ValueError(f"its header claims {n} bytes, the file has {len(data) - 8} after the length")
    return bytes(data[8 : 8 + n]), memoryview(data)[8 + n :]


def join(header: bytes, body: bytes | memoryview) -> bytes:
    """A safetensors file's bytes from its JSON header's bytes (padded with spaces to ALIGN) and data block."""
    header += b" " * (-(8 + len(header)) % ALIGN)
    return len(header).to_bytes(8, "little") + header + bytes(body)


def parse(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and string metadata of a safetensors file's bytes; ValueError naming what is wrong."""
    text, body = split(data)
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=unique_keys)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("malformed __metadata__")
        tensors = {name: _tensor(spec, body) for name, spec in header.items()}
    except (KeyError, TypeError, AttributeError, OverflowError, RecursionError) as exc:  # OverflowError: int(Infinity)
        raise ValueError(f"malformed header: {exc!r}") from None
    return tensors, dict(meta)


def unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object whose keys are unique (JSON leaves a repeated key open: Python kept the last, C refuses it)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the key {twice!r} appears twice in one JSON object")
    return out


def _tensor(spec: dict, body: memoryview) -> np.ndarray:
    dtype = DTYPES[spec["dtype"]]
    shape = tuple(int(d) for d in spec["shape"])
    begin, end = (int(v) for v in spec["data_offsets"])
    if any(d < 0 for d in shape) or not 0 <= begin <= end <= len(body) or end - begin != dtype.itemsize * math.prod(shape):
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
    return join(json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii"), b"".join(blobs))


def write_atomic(path: str | os.PathLike, data: bytes, what: str = "output file") -> Path:
    """Write `data` to `path` under the one output rule (files.write_atomic): only a regular writable file is
    replaced, it keeps its mode, and on any failure the old file (if any) stays as it was."""
    return files.write_atomic(path, data, what)

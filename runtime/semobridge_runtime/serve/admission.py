"""What a request may carry, checked before anything is allocated for it: the server's memory budget and
the check of a KServe v2 HTTP inference body (JSON, or JSON header + binary tensors).

Triton's HTTP front-end allocates a tensor for the shape a JSON request declares before it counts the
data (`[1,100000,100000,3]` with 12 values: std::bad_alloc, abort) and dies of some bodies that are not
JSON, so every HTTP request passes this check in semobridge-serve's own front door (gate.py) first.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

MIB = 1 << 20
JSON_MAX_BYTES = 16 * MIB  # a JSON body (pixels as text: ~4 bytes a value); larger tensors go binary or gRPC
HEADER_MAX_BYTES = 1 * MIB  # the JSON header of a binary-extension body
MAX_INPUTS, MAX_RANK = 16, 8
_SIZES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2, "UINT32": 4, "INT32": 4,
          "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8, "BYTES": None}
_RANGES = {name: (int(np.iinfo(name.lower()).min), int(np.iinfo(name.lower()).max))
           for name in ("UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "UINT64", "INT64")}
_BIGGER = "send fewer or smaller images per request, or start the server with a larger --max-request-mb"


@dataclass(frozen=True)
class Budget:
    """Bytes a request may carry, and bytes all requests in flight together may hold (semobridge-serve options)."""

    request_bytes: int = 256 * MIB  # --max-request-mb
    inflight_bytes: int = 1024 * MIB  # --max-inflight-mb
    max_batch: int = 32  # images per request (--max-batch)


class TooLarge(InputError):
    """A request over the per-request budget (HTTP 400 / gRPC INVALID_ARGUMENT: it will never fit)."""


class Busy(Exception):
    """The server's in-flight budget is spent: retry later (HTTP 429 / gRPC RESOURCE_EXHAUSTED)."""


class InFlight:
    """The bytes held by requests in flight, bounded by the server's budget (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def take(self, amount: int) -> None:
        """Reserve `amount` bytes or raise Busy (never waits: a client retries, the server holds nothing)."""
        with self._lock:
            if self.used + amount > self.limit:
                raise Busy(f"the server holds {self.used // MIB} MiB of requests in flight (budget "
                           f"{self.limit // MIB} MiB, --max-inflight-mb); this request needs {math.ceil(amount / MIB)} MiB")
            self.used += amount

    def give(self, amount: int) -> None:
        with self._lock:
            self.used -= amount


def check_length(length: int, budget: Budget, binary: bool) -> None:
    """An inference body's declared length against the per-request budget, and a JSON body's against
    JSON_MAX_BYTES (before a byte of it is read)."""
    if not binary and length > JSON_MAX_BYTES:
        raise TooLarge(f"a JSON request body may hold {JSON_MAX_BYTES // MIB} MiB, this one is {length} bytes",
                       hint="send the tensors as binary data (tritonclient.http does) or over gRPC")
    if length > budget.request_bytes:
        raise TooLarge(f"the request body is {length} bytes, over the {budget.request_bytes // MIB} MiB a request "
                         "may carry (--max-request-mb)", hint=_BIGGER)


def check_infer_body(body: bytes, header_length: int | None, budget: Budget) -> int:
    """Check an HTTP inference body; the bytes Triton will allocate for its input tensors.

    `header_length`: the Inference-Header-Content-Length header (binary extension), None for a JSON body.
    Raises InputError naming what is wrong: not JSON, no inputs, a negative or too large shape, a batch over
    --max-batch, data whose count does not match the shape, values outside the datatype's range.
    """
    if header_length is None and len(body) > JSON_MAX_BYTES:
        raise TooLarge(f"a JSON request body may hold {JSON_MAX_BYTES // MIB} MiB, this one is {len(body)} bytes",
                         hint="send the tensors as binary data (tritonclient.http does) or over gRPC")
    if header_length is not None and not 0 < header_length <= min(len(body), HEADER_MAX_BYTES):
        raise InputError(f"Inference-Header-Content-Length {header_length} does not fit a body of {len(body)} bytes "
                         f"(a header holds at most {HEADER_MAX_BYTES // MIB} MiB)")
    text = body if header_length is None else body[:header_length]
    try:
        request = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"the request is not valid JSON ({str(exc)[:120]})",
                         hint='send {"inputs": [{"name": ..., "datatype": ..., "shape": [...], "data": [...]}]}') from None
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
        raise InputError(f"the request needs an 'inputs' list of 1 to {MAX_INPUTS} tensors",
                         hint='send {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, H, W, 3], '
                              '"data": [...]}]}')
    binary = 0 if header_length is None else len(body) - header_length
    declared, sent = 0, 0
    for tensor in inputs:
        size = _check_tensor(tensor, header_length is not None, budget)
        declared += size
        sent += _binary_size(tensor)
    if declared > budget.request_bytes:
        raise TooLarge(f"the request's tensors take {declared} bytes, over the {budget.request_bytes // MIB} MiB "
                         "a request may carry (--max-request-mb)", hint=_BIGGER)
    if sent != binary:
        raise InputError(f"the inputs' binary_data_size add up to {sent} bytes, but {binary} follow the header")
    return declared


def _check_tensor(tensor: Any, binary_body: bool, budget: Budget) -> int:
    """One input's name, datatype, shape and data; the bytes its tensor takes."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise InputError("every entry of 'inputs' needs a 'name', a 'datatype' and a 'shape'")
    name, datatype, shape = tensor["name"], tensor.get("datatype"), tensor.get("shape")
    if datatype not in _SIZES:
        raise InputError(f"input '{name}': datatype {datatype!r} is not a KServe v2 datatype ({', '.join(_SIZES)})")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_RANK
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise InputError(f"input '{name}': shape {str(shape)[:80]} must be a list of 1 to {MAX_RANK} dimensions, "
                         "each an integer >= 0")
    if shape[0] > budget.max_batch:
        raise InputError(f"input '{name}': a batch of {shape[0]} is over the server's --max-batch {budget.max_batch}",
                         hint=f"send at most {budget.max_batch} images per request")
    count = math.prod(shape)
    item = _SIZES[datatype]
    size = count * item if item is not None else _binary_size(tensor)
    if size > budget.request_bytes:
        raise TooLarge(f"input '{name}': {datatype} {shape} takes {size} bytes, over the "
                         f"{budget.request_bytes // MIB} MiB a request may carry (--max-request-mb)", hint=_BIGGER)
    if "data" in tensor:
        _check_data(name, datatype, tensor["data"], count)
    elif not binary_body or "binary_data_size" not in (tensor.get("parameters") or {}):
        raise InputError(f"input '{name}' has no 'data' (nor binary_data_size in a binary-extension body)")
    elif item is not None and _binary_size(tensor) != size:
        raise InputError(f"input '{name}': binary_data_size {_binary_size(tensor)} is not the {size} bytes of "
                         f"{datatype} {shape}")
    return size


def _binary_size(tensor: dict[str, Any]) -> int:
    size = (tensor.get("parameters") or {}).get("binary_data_size", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InputError(f"input '{tensor['name']}': binary_data_size must be an integer >= 0, not {size!r}")
    return size


def _check_data(name: str, datatype: str, data: Any, count: int) -> None:
    """JSON `data` (flat or nested like the shape): `count` values of the datatype's kind and range."""
    values = _flat(data)
    if len(values) != count:
        raise InputError(f"input '{name}' has {len(values)} values in 'data', its shape holds {count}",
                         hint="make 'data' hold exactly the product of the shape's dimensions")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            raise InputError(f"input '{name}': BYTES data must be strings")
        return
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in values):
            raise InputError(f"input '{name}': BOOL data must be true or false")
        return
    array = np.asarray(values) if values else np.zeros(0, np.int64)
    if datatype in _RANGES:
        if array.dtype.kind not in "iu":
            raise InputError(f"input '{name}': {datatype} data must be integers")
        low, high = _RANGES[datatype]
        if array.size and (int(array.min()) < low or int(array.max()) > high):
            raise InputError(f"input '{name}': {datatype} values must be from {low} to {high}, this data holds "
                             f"{int(array.min())} to {int(array.max())}", hint="pixels are 0..255")
    elif array.dtype.kind not in "iuf":
        raise InputError(f"input '{name}': {datatype} data must be numbers")


def _flat(data: Any) -> list[Any]:
    """The values of a (possibly nested) JSON array, in order."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out

"""Hypothesis strategies for fuzzing the file readers: JSON values, byte mutations of valid files, and edits of a
safetensors file's JSON header (tests/runtime/test_reader_fuzz.py, tests/test_reader_fuzz.py).

The property every reader must keep: any input gives a result or our error (InputError / ModelError), never another
exception, and no hang. Runs are deterministic (derandomize, no example database written to the repository) and
bounded (max_examples, a deadline per example), so these tests take seconds.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from semobridge_runtime import tensorfile

#: For every reader test: a fixed budget, no files written beside the tests, the same examples on every run.
#: SB_FUZZ_EXAMPLES=N runs N random (not derandomized) examples instead: a longer campaign.
CAMPAIGN = int(os.environ.get("SB_FUZZ_EXAMPLES", "0"))
FUZZ_SETTINGS = settings(max_examples=CAMPAIGN or 150, deadline=5000, derandomize=not CAMPAIGN, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: Values that break readers: signs, sizes around 2**31, 2**63 and 2**64, non-integers, non-finite numbers, wrong types.
NASTY = st.sampled_from([0, 1, -1, 3, 2**31, 2**32 + 1, 2**63, 2**64, 10**30, -(2**63), 1.5, -0.0, 1e308,
                         float("inf"), float("-inf"), float("nan"), True, False, None, "", "4", "F32", "U8", "I64",
                         "\ud800", "a\nb", "\x00", [], {}, [0, 8], [-8, 0], [2**64, 2**64]])
LEAVES = NASTY | st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
#: Any JSON value Python's json writes (NaN and infinities included), nested a few levels.
JSON = st.recursive(LEAVES, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                    max_leaves=12)
#: Nesting beyond any recursion limit.
DEEP = st.integers(500, 50_000).map(lambda n: "[" * n + "]" * n) | st.integers(500, 50_000).map(lambda n: '{"a":' * n + "1" + "}" * n)


def edited(value: Any, draw: Callable) -> Any:
    """`value` with one node somewhere inside replaced by a JSON value or a nasty one (or a member dropped)."""
    if isinstance(value, dict) and value and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(value)))
        if draw(st.integers(0, 5)) == 0:
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: edited(value[key], draw)}
    if isinstance(value, list) and value and draw(st.integers(0, 3)):
        i = draw(st.integers(0, len(value) - 1))
        return value[:i] + [edited(value[i], draw)] + value[i + 1:]
    return draw(JSON)


def split(data: bytes) -> tuple[dict, bytes]:
    """A safetensors file's header (parsed) and data block."""
    header, body = tensorfile.split(data)
    return json.loads(header), bytes(body)


def join(header: Any, body: bytes) -> bytes:
    return tensorfile.join(json.dumps(header).encode("utf-8", "surrogatepass"), body)


@st.composite
def mutated_bytes(draw: Callable, data: bytes) -> bytes:
    """`data` with a few byte-level mutations: bit flips, bytes set, inserted or deleted, a cut, the length prefix
    rewritten."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut", "length"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and out:
            out[at] = draw(st.sampled_from(b'\x00\xff"[{}],:-9e\\\n') | st.integers(0, 255))
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del out[at:at + draw(st.integers(1, 16))]
        elif op == "cut":
            del out[at:]
        elif op == "length" and len(out) >= 8:
            n = draw(st.sampled_from([0, 1, len(out) - 8, len(out) - 7, 2**31, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1))
            out[:8] = (n % 2**64).to_bytes(8, "little")
    return bytes(out)


@st.composite
def header_edits(draw: Callable, data: bytes) -> bytes:
    """The safetensors file `data` with its JSON header edited somewhere (types, shapes, offsets, metadata), the data
    block kept, sometimes cut or grown."""
    header, body = split(data)
    body = draw(st.sampled_from([body, body[: len(body) // 2], body + b"\x00" * 8]))
    return join(edited(header, draw), body)


def file_inputs(valid: bytes) -> st.SearchStrategy[bytes]:
    """Bytes for a reader of files like `valid`: any bytes, byte mutations of it, edits of its header, a deep header."""
    return st.one_of(
        st.binary(max_size=512),
        mutated_bytes(valid),
        header_edits(valid),
        DEEP.map(lambda text: len(text).to_bytes(8, "little") + text.encode()),
    )


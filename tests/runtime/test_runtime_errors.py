"""One error model: the runtime's table agrees with semobridge.errors, semobridge.h and docs/errors.md,
and the runtime's limits and version agree with the library and the C header."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import semobridge_runtime
from semobridge_runtime import ERROR_TABLE, BackendError, InputError, ModelError, SemobridgeError
from semobridge_runtime import limits

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "runtime" / "c" / "include" / "semobridge.h"


def header_defines() -> dict[str, str]:
    return dict(re.findall(r"^#define (SB_\w+) (\S+(?: << \d+\))?)", HEADER.read_text(), re.MULTILINE))


def test_table_rows() -> None:
    assert [(row.kind, row.python, row.exit_code) for row in ERROR_TABLE] == [
        ("input error", InputError, 2), ("model error", ModelError, 3), ("runtime error", BackendError, 4)]
    for row in ERROR_TABLE:
        assert issubclass(row.python, SemobridgeError) and row.python.kind == row.kind
        assert row.python.exit_code == row.exit_code
    assert issubclass(InputError, ValueError) and issubclass(ModelError, ValueError)
    assert issubclass(BackendError, RuntimeError)
    assert InputError("x", hint="do y").hint == "do y" and ModelError("x").hint is None


def test_table_matches_the_c_header() -> None:
    defines = header_defines()
    codes = {name: int(value.strip("()")) for name, value in defines.items() if name.startswith("SB_E")}
    assert codes == {name: value for row in ERROR_TABLE for name, value in row.c_codes.items()}


def test_table_matches_the_library() -> None:
    errors = pytest.importorskip("semobridge.errors", reason="semobridge (the library) is not installed")
    for row in ERROR_TABLE:
        library = getattr(errors, row.python.__name__)
        assert (library.kind, library.exit_code, library.__bases__[1]) == (row.kind, row.exit_code,
                                                                            row.python.__bases__[1])


@pytest.mark.parametrize("doc", ["docs/errors.md", "runtime/README.md"])
def test_table_matches_the_docs(doc: str) -> None:
    text = (ROOT / doc).read_text()
    for row in ERROR_TABLE:
        line = next(line for line in text.splitlines() if line.startswith((f"| {row.kind} |", f"| {row.kind}: ")))
        assert f"`{row.python.__name__}`" in line and line.rstrip(" |").endswith(f"| {row.exit_code}")
        for name, value in row.c_codes.items():
            assert (f"`{name}` ({value})" if doc == "docs/errors.md" else f"`{name}`") in line


def test_limits_match_the_c_header() -> None:
    defines = header_defines()
    assert int(defines["SB_MAX_SIDE"]) == limits.MAX_SIDE
    assert eval(defines["SB_MAX_PIXELS"].replace("LL", "")) == limits.MAX_PIXELS  # (1LL << 26)
    assert float(defines["SB_MAX_ASPECT"]) == limits.MAX_ASPECT
    assert int(defines["SB_MAX_THREADS"]) == limits.MAX_THREADS


def test_version_matches_the_c_header() -> None:
    assert header_defines()["SB_VERSION"] == f'"{semobridge_runtime.__version__}"'

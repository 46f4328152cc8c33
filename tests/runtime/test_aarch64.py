"""aarch64: `make -C runtime/c test-aarch64` cross-builds the C library, its examples and tests, runs them under qemu-user
and compares the classes and scores of the exported tiny model with this machine's build, and runs the Python runtime
on an arm64 CPython under qemu the same way (tests/runtime/aarch64.py).

Needs the Debian packages gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, libstdc++6-arm64-cross and qemu-user, unshare
(util-linux) with the right to make a mount namespace, and PyPI for the aarch64 onnxruntime wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .aarch64 import SYSROOT, TOLERANCE
from .conftest import C_DIR

PACKAGES = "gcc-aarch64-linux-gnu libc6-dev-arm64-cross libstdc++6-arm64-cross qemu-user"


def missing() -> str | None:
    """Why the aarch64 build cannot run here, or None."""
    for tool in ("aarch64-linux-gnu-gcc", "qemu-aarch64", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {PACKAGES})"
    if not (SYSROOT / "lib" / "libstdc++.so.6").exists():
        return f"no aarch64 libstdc++ in {SYSROOT} (apt-get install libstdc++6-arm64-cross)"
    unshare = ["unshare", "-m", "true"] if os.geteuid() == 0 else ["unshare", "-r", "-m", "true"]
    if subprocess.run(unshare, capture_output=True).returncode != 0:
        return "cannot make a mount namespace (unshare -m) to show ONNX Runtime an ARM /proc/cpuinfo under qemu"
    return None


@pytest.mark.skipif(missing() is not None, reason=missing() or "")
def test_aarch64_build_passes_its_tests_and_classifies_as_x86(c_build: Path, request: pytest.FixtureRequest) -> None:
    try:  # the exported tiny model; with the runtime alone (no torch) the toy contract model only
        model: Path | None = request.getfixturevalue("onnx_model")
    except pytest.skip.Exception:
        model = None
    done = subprocess.run(["make", "-C", str(C_DIR), "test-aarch64", f"PYTHON={sys.executable}",
                           f"AARCH64_MODEL={model or ''}"], capture_output=True, text=True, timeout=900)
    if "cannot download the aarch64 onnxruntime" in done.stderr:
        pytest.skip(f"the aarch64 onnxruntime wheel cannot be had here: {done.stderr[-500:]}")
    summary = re.search(r"^(\d+) passed, (\d+) failed$", done.stdout, re.M)
    assert done.returncode == 0 and summary and summary.group(2) == "0", done.stdout[-5000:] + done.stderr[-3000:]
    assert int(summary.group(1)) >= 90  # test_errors, test_classes and the parity checks all ran
    for check in ("classify, toy model", "camera (NV12), toy model") + (
            ("classify, exported model", "camera (NV12), exported model") if model else ()):
        assert re.search(rf"^ok {re.escape(check)}: \d+ labels equal", done.stdout, re.M), check
    if model:
        python = re.search(r"^(ok Python runtime, exported model: .*|skip Python runtime on aarch64: .*)$",
                           done.stdout, re.M)
        assert python, "the Python runtime on aarch64 neither ran nor said why not"
        print(python.group(1))  # skipped only where Debian's arm64 Python or PyPI's aarch64 wheels cannot be had
    difference = float(re.search(r"^aarch64 vs x86: max \|score difference\| (\S+)", done.stdout, re.M).group(1))
    print(f"aarch64 (qemu) vs x86: max |score difference| {difference:.3g}")
    assert difference <= TOLERANCE

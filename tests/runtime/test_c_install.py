"""`make install PREFIX=...` gives a prefix that works on its own: after the build tree is moved away,
and without the Python environment's onnxruntime, a program built with pkg-config runs a model."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from semobridge_runtime import Classifier

from .conftest import C_DIR

PROGRAM = r"""
#include <semobridge.h>
#include <stdio.h>

int main(int argc, char ** argv) {
    static uint8_t rgb[6 * 9 * 3];
    float scores[64];
    int64_t label;
    char err[256];
    struct sb_model * model = NULL;
    int rc = sb_load(argv[1], sb_default_params(), &model, err, sizeof err);
    if (rc != SB_OK) { fprintf(stderr, "%s\n", err); return 1; }
    for (int i = 0; i < (int) sizeof rgb; i++) rgb[i] = (uint8_t) (i * 7);
    rc = sb_classify(model, rgb, 1, 6, 9, 27, scores, &label);
    if (rc != SB_OK) { fprintf(stderr, "%s\n", sb_last_error(model)); return 1; }
    printf("%s %lld", sb_version(), (long long) label);
    for (int i = 0; i < sb_num_classes(model); i++) printf(" %.9g", scores[i]);
    printf("\n");
    sb_close(model);
    return argc == 2 ? 0 : 1;
}
"""


@pytest.fixture(scope="module")
def installed(c_build: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build a copy of runtime/c, install it into a prefix, move the build tree away, build a program
    against the prefix with pkg-config."""
    if shutil.which("pkg-config") is None:
        pytest.skip("pkg-config is not installed (apt-get install pkg-config)")
    root = tmp_path_factory.mktemp("install")
    source, prefix, headers = root / "src", root / "prefix", root / "ort-include"
    shutil.copytree(C_DIR, source, ignore=shutil.ignore_patterns("build"))
    shutil.copytree(c_build / "ort" / "include", headers)  # the fetched headers: no second download
    make = ["make", "-C", str(source), f"PYTHON={sys.executable}", f"ORT_INCLUDE={headers}"]
    for target in ([], ["install", f"PREFIX={prefix}"]):
        done = subprocess.run([*make, *target], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
    source.rename(root / "moved")  # nothing may point into the build tree any more
    env = os.environ | {"PKG_CONFIG_PATH": str(prefix / "lib" / "pkgconfig")}
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "semobridge"], env=env, check=True,
                           capture_output=True, text=True).stdout.split()
    libdir = subprocess.run(["pkg-config", "--variable=libdir", "semobridge"], env=env, check=True,
                            capture_output=True, text=True).stdout.strip()
    (root / "program.c").write_text(PROGRAM)
    subprocess.run(["cc", "-std=c11", "-o", str(root / "program"), str(root / "program.c"), *flags,
                    f"-Wl,-rpath,{libdir}"], check=True, capture_output=True, text=True)
    return {"prefix": prefix, "libdir": Path(libdir), "program": root / "program"}


def check_output(stdout: str, model: Path) -> None:
    """The program's "version label scores..." line equals the Python runtime's result on its image."""
    rgb = (np.arange(6 * 9 * 3) * 7 % 256).astype(np.uint8).reshape(6, 9, 3)
    expected = Classifier.load(model, unknown=None).predict(rgb)  # C: no "unknown" yet
    words = stdout.split()
    assert words[:2] == ["0.1.0", str(expected.labels[0])]
    np.testing.assert_allclose(np.array(words[2:], np.float64), expected.scores[0], rtol=0, atol=1e-5)


def test_prefix_layout(installed: dict[str, Path]) -> None:
    prefix, libdir = installed["prefix"], installed["libdir"]
    assert libdir == prefix / "lib"
    pc = (libdir / "pkgconfig" / "semobridge.pc").read_text()
    assert f"prefix={prefix}\n" in pc and "Version: 0.1.0" in pc and "build" not in pc
    assert (prefix / "include" / "semobridge.h").is_file()
    link = libdir / "libonnxruntime.so.1"  # the SONAME link, to a real copy of ONNX Runtime beside it
    assert link.is_symlink() and "/" not in os.readlink(link) and link.resolve().parent == libdir
    assert link.resolve().is_file() and not link.resolve().is_symlink()
    dynamic = subprocess.run(["readelf", "-d", str(libdir / "libsemobridge.so")], check=True,
                             capture_output=True, text=True).stdout
    assert "Library runpath: [$ORIGIN]" in dynamic


def test_installed_program_runs(installed: dict[str, Path], contract_onnx: Path) -> None:
    done = subprocess.run([installed["program"], contract_onnx], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    check_output(done.stdout, contract_onnx)
    ldd = subprocess.run(["ldd", str(installed["program"])], check=True, capture_output=True, text=True).stdout
    assert f"libonnxruntime.so.1 => {installed['libdir']}/libonnxruntime.so.1" in ldd


def test_installed_program_runs_without_the_python_onnxruntime(installed: dict[str, Path],
                                                               contract_onnx: Path, tmp_path: Path) -> None:
    """The Python environment's onnxruntime folder is hidden (an empty folder mounted over it)."""
    capi = Path(onnxruntime.__file__).parent / "capi"
    mount = f"mount --bind {shlex.quote(str(tmp_path))} {shlex.quote(str(capi))}"
    hide = f"{mount} && exec {shlex.quote(str(installed['program']))} {shlex.quote(str(contract_onnx))}"
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", mount], capture_output=True,
                           text=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        pytest.skip("cannot hide a folder here (needs unshare and mount rights)")
    done = subprocess.run(["unshare", "--mount", "sh", "-c", hide], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    check_output(done.stdout, contract_onnx)

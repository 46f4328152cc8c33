"""Where runtime/c finds ONNX Runtime: a release's layout (ORT_ROOT), pkg-config (ORT_PKG), and a clear message from
the header fetch off Debian (Ubuntu and JetPack have no Debian apt sources)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import C_DIR


@pytest.fixture(scope="module")
def release(c_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ONNX Runtime release's layout (include/, lib/libonnxruntime.so -> .so.1.x.y), from the default build's."""
    root = tmp_path_factory.mktemp("onnxruntime-linux-x64")
    shutil.copytree(c_build / "ort" / "include", root / "include")
    library = (c_build / "ort" / "lib" / "libonnxruntime.so.1").resolve()
    (root / "lib").mkdir()
    shutil.copy(library, root / "lib" / library.name)
    (root / "lib" / "libonnxruntime.so").symlink_to(library.name)
    return root


def build(tmp_path: Path, *options: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Build the library and the camera example into tmp_path/build with these make options."""
    target = tmp_path / "build" / "examples" / "camera"
    return subprocess.run(["make", "-C", str(C_DIR), f"BUILD={tmp_path / 'build'}", *options, str(target)],
                          capture_output=True, text=True, timeout=300, env=env)


def runs(tmp_path: Path, release: Path) -> bool:
    """The example starts, with ONNX Runtime found beside the library (its usage on no arguments, exit status 2)."""
    done = subprocess.run([tmp_path / "build" / "examples" / "camera"], capture_output=True, text=True)
    bundled = (tmp_path / "build" / "libonnxruntime.so.1").resolve()
    return done.returncode == 2 and "usage: camera" in done.stderr and bundled.parent == release / "lib"


def test_build_with_a_release_layout(release: Path, tmp_path: Path) -> None:
    done = build(tmp_path, f"ORT_ROOT={release}")
    assert done.returncode == 0, done.stderr
    assert f"-I{release}/include" in done.stdout and "fetch_ort_headers" not in done.stdout + done.stderr
    assert runs(tmp_path, release)


def test_build_with_pkg_config(release: Path, tmp_path: Path) -> None:
    if shutil.which("pkg-config") is None:
        pytest.skip("pkg-config is not installed (apt-get install pkg-config)")
    (tmp_path / "libonnxruntime.pc").write_text(
        f"prefix={release}\nincludedir=${{prefix}}/include\nlibdir=${{prefix}}/lib\n\nName: onnxruntime\n"
        "Description: ONNX Runtime\nVersion: 1.0.0\nLibs: -L${libdir} -lonnxruntime\nCflags: -I${includedir}\n")
    env = {**os.environ, "PKG_CONFIG_PATH": str(tmp_path)}
    done = build(tmp_path, "ORT_PKG=libonnxruntime", env=env)
    assert done.returncode == 0, done.stderr
    assert runs(tmp_path, release)
    done = build(tmp_path, "ORT_PKG=no-such-onnxruntime", env=env)
    assert done.returncode != 0 and "pkg-config knows no no-such-onnxruntime" in done.stderr


def test_header_fetch_off_debian_says_what_to_do(tmp_path: Path) -> None:
    done = subprocess.run(["sh", C_DIR / "fetch_ort_headers.sh", tmp_path / "ort"], capture_output=True, text=True,
                          env={**os.environ, "SB_APT_SOURCES": str(tmp_path / "no-debian.sources")})
    assert done.returncode == 1 and not (tmp_path / "ort").exists()
    for option in ("ORT_ROOT=", "ORT_PKG=libonnxruntime", "ORT_INCLUDE="):
        assert option in done.stderr, done.stderr

"""semobridge-serve finds the tritonserver inside the nvidia-pytriton wheel through its private layout, in one
function (serve/distribution.py): the installed wheel is laid out so, and a wheel laid out otherwise is refused
with the path that is missing, before anything starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from semobridge_runtime.errors import BackendError
from semobridge_runtime.serve.distribution import Distribution, locate

PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"


def fake_wheel(site: Path, python: str = PYTHON) -> Path:
    """site-packages holding pytriton/ and nvidia_pytriton.libs/ as the 0.7 wheel lays them out (empty files)."""
    package, dist = site / "pytriton", site / "pytriton" / "tritonserver"
    for folder in (dist / "bin", dist / "backends" / "python", dist / "python_backend_stubs" / python, dist / "caches",
                   site / "nvidia_pytriton.libs"):
        folder.mkdir(parents=True)
    for path in (dist / "bin" / "tritonserver", dist / "backends" / "python" / "libtriton_python.so",
                 dist / "python_backend_stubs" / python / "triton_python_backend_stub"):
        path.write_bytes(b"")
    return package


def test_the_installed_wheel_has_the_layout() -> None:
    pytest.importorskip("pytriton", reason="the serve extra (nvidia-pytriton) is not installed")
    found = Distribution.find()
    assert found.tritonserver.is_file() and found.stub.is_file() and found.libraries.is_dir()
    assert (found.python_backend / "libtriton_python.so").is_file() and found.caches.is_dir()


def test_a_fake_wheel_is_read(tmp_path: Path) -> None:
    package = fake_wheel(tmp_path)
    found = locate(package, PYTHON)
    assert found.tritonserver == package / "tritonserver" / "bin" / "tritonserver"
    assert found.libraries == tmp_path / "nvidia_pytriton.libs"


@pytest.mark.parametrize("moved", ["tritonserver/bin/tritonserver", "tritonserver/backends/python/libtriton_python.so",
                                   "tritonserver/caches", "../nvidia_pytriton.libs"])
def test_a_changed_layout_names_what_is_missing(tmp_path: Path, moved: str) -> None:
    package = fake_wheel(tmp_path)
    gone = (package / moved).resolve()
    gone.rename(tmp_path / "elsewhere")
    with pytest.raises(BackendError, match="not laid out as semobridge-serve expects") as error:
        locate(package, PYTHON)
    # without nvidia_pytriton.libs beside the package, an editable install's folder inside it is looked for
    expected = package / "tritonserver" / "external_libs" if gone.name == "nvidia_pytriton.libs" else gone
    assert str(expected) in str(error.value)
    assert "nvidia-pytriton 0.7" in error.value.hint


def test_a_python_without_a_stub_is_named(tmp_path: Path) -> None:
    package = fake_wheel(tmp_path, "3.10")
    (package / "tritonserver" / "python_backend_stubs" / "3.9").mkdir()
    with pytest.raises(BackendError, match=r"no Triton Python-backend stub for Python 3\.99 \(it has 3\.9, 3\.10\)"):
        locate(package, "3.99")

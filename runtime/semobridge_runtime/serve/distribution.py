"""Where the Triton build inside the nvidia-pytriton wheel lies: the one place that knows its private layout.

semobridge-serve runs that `tritonserver` itself rather than through PyTriton's public API
(`pytriton.triton.Triton`); runtime/README.md ("Serving", "Why not PyTriton's Triton class") says why. The
layout read here is nvidia-pytriton 0.7's (unchanged since 0.2); `locate` checks every path it returns, so a
wheel laid out otherwise stops the command with the path it missed, not a failure inside Triton.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendError

INSTALL = "pip install 'semobridge-runtime[serve]'"
TESTED = "0.7"  # the nvidia-pytriton release whose layout this reads


@dataclass(frozen=True)
class Distribution:
    """The Triton build inside the nvidia-pytriton wheel."""

    tritonserver: Path
    python_backend: Path  # libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this Python version
    libraries: Path  # the shared libraries tritonserver links against
    caches: Path

    @classmethod
    def find(cls) -> Distribution:
        """The installed wheel's build (located, not imported: `import pytriton` takes 0.5 s)."""
        spec = importlib.util.find_spec("pytriton")
        if spec is None or spec.origin is None:
            raise BackendError("semobridge-serve needs NVIDIA Triton, which the serve extra installs", hint=INSTALL)
        return locate(Path(spec.origin).parent, f"{sys.version_info[0]}.{sys.version_info[1]}")


def locate(package: Path, python: str) -> Distribution:
    """The build under `package` (the installed `pytriton` folder) for Python `python` ("3.11"), every path checked."""
    dist = package / "tritonserver"
    stubs = dist / "python_backend_stubs"
    libraries = package.parent / "nvidia_pytriton.libs"  # wheel install; an editable one keeps them inside
    found = Distribution(dist / "bin" / "tritonserver", dist / "backends" / "python",
                         stubs / python / "triton_python_backend_stub",
                         libraries if libraries.is_dir() else dist / "external_libs", dist / "caches")
    if stubs.is_dir() and not (stubs / python).is_dir():
        have = sorted((p.name for p in stubs.iterdir() if p.is_dir()),
                      key=lambda v: [int(x) if x.isdigit() else -1 for x in v.split(".")])
        raise BackendError(f"nvidia-pytriton has no Triton Python-backend stub for Python {python} "
                           f"(it has {', '.join(have) or 'none'})", hint="run semobridge-serve on one of those Pythons")
    wanted = [(found.tritonserver, "is_file"), (found.python_backend / "libtriton_python.so", "is_file"),
              (found.stub, "is_file"), (found.libraries, "is_dir"), (found.caches, "is_dir")]
    missing = [path for path, test in wanted if not getattr(path, test)()]
    if missing:
        raise BackendError(f"the nvidia-pytriton install at {package} is not laid out as semobridge-serve expects "
                           f"(nvidia-pytriton {TESTED}'s layout): {', '.join(map(str, missing))} missing",
                           hint=f"reinstall it ({INSTALL}), or install nvidia-pytriton {TESTED}.x if a newer one "
                                "moved its files")
    return found

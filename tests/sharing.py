"""What the pytest-xdist workers of one test run (`python -m pytest -n 2`) share: folders built once, and locks.

Without xdist both are plain: the folder is built in the session's temporary folder, and nothing is locked.
Torch-free, so that the runtime's tests can use it alone.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, ContextManager

import pytest


def _run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The temporary folder shared by the workers of this run (pytest-xdist), or None without xdist."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return None
    return tmp_path_factory.getbasetemp().parent


def one_worker_at_a_time(tmp_path_factory: pytest.TempPathFactory, name: str) -> ContextManager:
    """A lock named `name`, held by one worker of the run at a time (nothing to lock without xdist)."""
    root = _run_folder(tmp_path_factory)
    if root is None:
        return contextlib.nullcontext()
    from filelock import FileLock  # a dependency of torch and of pytest-xdist's own tests' recipe

    return FileLock(str(root / f"{name}.lock"))


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """The folder `name`, made by `build(folder)` once per test run: under pytest-xdist the first worker builds it
    (under a lock) and the others wait and reuse it (pytest-xdist's recipe for session fixtures). Tests must not
    change what is in it: copy it to a tmp_path first."""
    root = _run_folder(tmp_path_factory)
    if root is None:
        folder = tmp_path_factory.mktemp(name) / name
        build(folder)
        return folder
    folder, done = root / name, root / f"{name}.done"
    with one_worker_at_a_time(tmp_path_factory, name):
        if not done.exists():
            build(folder)
            done.touch()
    return folder

"""The command's surface and the environment it gives Triton's Python backend."""

from __future__ import annotations

import os
import subprocess
import sysconfig
from pathlib import Path

import click

from semobridge_runtime.serve.cli import cli
from semobridge_runtime.serve.server import Distribution, TritonServer, python_library_dir

from .conftest import SERVE


def test_every_option_has_help_and_version_works() -> None:
    undocumented = [p.name for p in cli.params if isinstance(p, click.Option) and not p.help]
    assert not undocumented
    done = subprocess.run([*SERVE, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("semobridge-serve ")


def test_the_python_backend_gets_the_shared_libpython() -> None:
    """Without libpython's folder on LD_LIBRARY_PATH the stub fails inside Python (issue 11): it must come first."""
    folder = python_library_dir()
    assert (folder / sysconfig.get_config_var("LDLIBRARY")).is_file()
    env = TritonServer._environment(Distribution.find(), folder)
    assert env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == str(folder)
    assert Path(env["PATH"].split(os.pathsep)[0], "python3").exists()  # the stub's Python: this environment's

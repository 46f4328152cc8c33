"""The README's snippets run exactly as written: every ```bash and ```python block, pasted alone into a fresh shell
or interpreter at the repository root after the quick start.

The quick start runs once (the costly step: a fit and an export of the tiny model); each later snippet then runs
in its own copy of that state, so that no snippet depends on another. The install and test blocks (`<!-- ci:... -->`)
are what `.ci/run` executes; the serving blocks run against a real `semobridge-serve` on the README's ports.
"""
from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEMO = Path("semobridge") / "demo_data"  # the snippets' image paths are relative to the repository root
QUICK_START_TIMEOUT_S = 600
SNIPPET_TIMEOUT_S = 180
SERVING = "Serving"
SERVE_PORTS = (8000, 8001, 8002)  # the README's (semobridge-serve's defaults)

@dataclass(frozen=True)
class Snippet:
    language: str
    code: str
    line: int  # of the opening fence
    section: str  # the `## ` heading it is under
    marker: str  # the line before the fence (e.g. `<!-- ci:test -->`)

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.section}, {self.language})"


def readme_snippets(text: str) -> list[Snippet]:
    """The fenced blocks of a Markdown text, in order."""
    snippets, section, fence = [], "", None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if fence is None and line.startswith("## "):
            section = line[3:].strip()
        elif fence is None and line.startswith("```"):
            fence = (line[3:].strip(), i)
        elif fence is not None and line.startswith("```"):
            language, start = fence
            marker = lines[start - 1].strip() if start else ""
            if marker == "" and start > 1:
                marker = lines[start - 2].strip() if lines[start - 2].startswith("<!--") else ""
            snippets.append(Snippet(language, "\n".join(lines[start + 1:i]) + "\n", start + 1, section, marker))
            fence = None
    return snippets


def runnable() -> list[Snippet]:
    return [s for s in readme_snippets(README.read_text(encoding="utf-8"))
            if s.language in ("bash", "python") and not s.marker.startswith("<!-- ci:")]


def environment() -> dict[str, str]:
    """A user's shell: the commands of this install on PATH, nothing of the test run's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


def command(snippet: Snippet, scripts: Path) -> list[str]:
    """The argv that runs a snippet as pasted: bash stops at the first failing command, python runs a file."""
    if snippet.language == "bash":
        return ["bash", "-e", "-o", "pipefail", "-c", snippet.code]
    script = scripts / f"readme_{snippet.line}.py"  # outside the working folder: only the install is importable
    script.write_text(snippet.code, encoding="utf-8")
    return [sys.executable, str(script)]


def run(snippet: Snippet, cwd: Path, scripts: Path, timeout: float = SNIPPET_TIMEOUT_S) -> subprocess.CompletedProcess:
    done = subprocess.run(command(snippet, scripts), cwd=cwd, env=environment(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and "Traceback" not in done.stderr, (
        f"{snippet} exited with {done.returncode}:\n{snippet.code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Snippet]]:
    """A stand-in repository root (the demo images at their path) after the quick start's block, and the
    snippets that follow it."""
    snippets = runnable()
    first = snippets[0]
    assert first.section == "Quick start" and "semobridge-export" in first.code, f"{first} is not the quick start"
    root = tmp_path_factory.mktemp("readme") / "repo"
    (root / DEMO).parent.mkdir(parents=True)
    (root / DEMO).symlink_to(ROOT / DEMO, target_is_directory=True)
    run(first, root, root.parent, timeout=QUICK_START_TIMEOUT_S)
    assert (root / "quickstart" / "artifacts" / "model.onnx").is_file()
    return root, snippets[1:]


def fresh_copy(root: Path, name: str) -> Path:
    """The state right after the quick start, for one snippet alone."""
    copy = root.parent / name
    shutil.copytree(root, copy, symlinks=True)
    return copy


def test_snippets_run_alone_after_the_quick_start(quick_start):
    root, snippets = quick_start
    ran = []
    for snippet in snippets:
        if snippet.section == SERVING:
            continue
        cwd = fresh_copy(root, f"line{snippet.line}")
        run(snippet, cwd, root.parent)
        ran.append(snippet.line)
        assert not any(p.name == "artifacts" for p in cwd.iterdir()), f"{snippet} wrote outside quickstart/"
    assert len(ran) >= 4, f"only the snippets at lines {ran} ran"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_ready(process: subprocess.Popen, timeout: float) -> bool:
    """Whether the server printed its ready line within `timeout` seconds (and still runs)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0 and process.poll() is None:
        if select.select([process.stdout], [], [], left)[0]:
            line = process.stdout.readline()
            if "ready" in line:
                return process.poll() is None
    return False


def test_serving_snippets_run_against_the_server(quick_start):
    pytest.importorskip("pytriton", reason="needs the serve extra: pip install './runtime[serve]'")
    pytest.importorskip("tritonclient", reason="needs the serve extra: pip install './runtime[serve]'")
    if shutil.which("curl") is None:
        pytest.skip("the README's request is a curl command: apt-get install curl")
    busy = [p for p in SERVE_PORTS if not _port_free(p)]
    if busy:
        pytest.skip(f"the README's ports {busy} are in use on this machine")
    root, snippets = quick_start
    server, *clients = [s for s in snippets if s.section == SERVING]
    assert "semobridge-serve" in server.code and clients, [str(s) for s in (server, *clients)]
    cwd = fresh_copy(root, "serving")
    log = cwd.parent / "serve.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(command(server, root.parent), cwd=cwd, env=environment(), stdout=subprocess.PIPE,
                                   stderr=stderr, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert wait_ready(process, SNIPPET_TIMEOUT_S), f"{server} did not start:\n{log.read_text()}"
        for snippet in clients:
            done = run(snippet, cwd, root.parent)
            assert re.search(r"\w", done.stdout), f"{snippet} printed nothing"
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # Ctrl-C or SIGTERM drains and stops, as the README says
        try:
            assert process.wait(timeout=90) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise

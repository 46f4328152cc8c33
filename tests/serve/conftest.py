"""semobridge-serve as a user runs it: the command in a subprocess, on loopback ports picked free, stopped by SIGTERM."""

from __future__ import annotations

import importlib.util
import io
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.common import free_ports  # one picker for tests and benchmarks

if importlib.util.find_spec("pytriton") is None or importlib.util.find_spec("tritonclient") is None:
    pytest.skip("needs the serve extra: pip install './runtime[serve]' (nvidia-pytriton, tritonclient)",
                allow_module_level=True)

READY_TIMEOUT_S = 180.0
SERVE = [sys.executable, "-m", "semobridge_runtime.serve.cli"]


@dataclass
class Served:
    """A running `semobridge-serve` process and its ports."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    metrics_port: int
    log: Path
    stdout: list[str] = field(default_factory=list)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stderr(self) -> str:
        return self.log.read_text()

    def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM (drain) and the exit code; killed if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def start_server(model: Path, tmp: Path, *options: str, ports: list[int] | None = None) -> Served:
    """Start semobridge-serve on 127.0.0.1 and wait for its ready line (its stderr goes to a file)."""
    http, grpc, metrics = ports or free_ports(3)
    log = tmp / f"serve-{http}-{time.monotonic_ns()}.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [*SERVE, str(model), "--address", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
             "--metrics-port", str(metrics), *options],
            stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True)
    served = Served(process, http, grpc, metrics, log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:  # exited
            process.wait()
            pytest.fail(f"semobridge-serve exited with {process.returncode} before it was ready:\n{served.stderr()}")
        served.stdout.append(line)
        if "ready" in line:
            return served
    served.stop()
    pytest.fail(f"semobridge-serve was not ready after {READY_TIMEOUT_S} s:\n{served.stderr()}")


@pytest.fixture(scope="session")
def serve_model(exported_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as the exporter writes it, without the int8 artifact: on the CPU the server and the
    reference would load model_int8.onnx instead, whose dynamic quantisation scales each run's activations
    together, so that a request's scores would depend on the requests batched with it."""
    folder = tmp_path_factory.mktemp("fp32")
    for path in exported_onnx.iterdir():
        if path.is_file() and not path.name.startswith("model_int8."):
            shutil.copy(path, folder / path.name)
    return folder / "model.onnx"


@pytest.fixture(scope="session")
def local(serve_model: Path):
    """The in-process runtime on the same model: the reference every served result is compared with."""
    from semobridge_runtime import Classifier

    return Classifier.load(serve_model)  # unknown="auto", as the server's default


@pytest.fixture(scope="session")
def server(serve_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """One server for the tests that do not stop it (dynamic batching with a short queue delay)."""
    served = start_server(serve_model, tmp_path_factory.mktemp("serve"), "--max-batch", "16",
                          "--max-queue-delay-us", "2000")
    yield served
    assert served.stop() == 0, served.stderr()


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """Seeded images of mixed sizes (several share a size, so that they batch)."""
    rng = np.random.default_rng(11)
    sizes = [(32, 32), (48, 64), (64, 48), (96, 96), (32, 32), (48, 64), (120, 90), (96, 96)]
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]

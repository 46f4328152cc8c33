"""Run Triton Inference Server (the build that nvidia-pytriton ships) on a semobridge model repository.

`TritonServer` writes the repository and a backend folder into a temporary workspace (removed at
stop), checks the ports, starts `tritonserver` with the environment its Python backend needs,
waits until the model is ready, and stops it by SIGTERM, on which Triton closes its endpoints, finishes
the requests it has accepted (up to the drain timeout) and exits. The public HTTP and metrics ports are
the gate's (gate.py), which checks each request before Triton sees it; the public gRPC port is the gRPC door's
(grpc_door.py), on the same budget. Triton itself listens on no port: its HTTP, gRPC and metrics endpoints
are Unix sockets in the workspace, a folder only this user may enter (mode 0700), so that no other user of
the machine reaches them, and no key is needed (Triton takes its restricted-API keys on its command line
only, where every user sees them with `ps`).
"""

from __future__ import annotations

import collections
import ctypes
import errno
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..classifier import Classifier
from ..errors import BackendError, InputError
from .admission import Budget
from .distribution import Distribution  # the tritonserver in nvidia-pytriton's wheel: why, in there
from .gate import Gate, UnixHTTPConnection
from .grpc_door import GrpcDoor
from .repository import Batching, write_repository
from .settings import ServeSettings

STARTUP_TIMEOUT_S = 300.0
MMAP_THRESHOLD = 1 << 20
_SUN_PATH_MAX = 107  # bytes of a Unix socket's path (sockaddr_un.sun_path, with its NUL)
# What tritonserver says on every machine without a GPU: not worth showing in an error summary.
_NOISE = ("CudaDriverHelper", "NVML", "DCGM", "pinned memory", "CUDA memory pool", "GPU metrics")


@dataclass(frozen=True)
class Endpoints:
    """Where the server listens (Triton's defaults: HTTP 8000, gRPC 8001, metrics 8002, all addresses)."""

    address: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002

    def ports(self) -> dict[str, int]:
        return {"--http-port": self.http_port, "--grpc-port": self.grpc_port, "--metrics-port": self.metrics_port}


@dataclass(frozen=True)
class Sockets:
    """Triton's own endpoints: Unix sockets in `folder` (its port options still want numbers: gRPC appends
    ':<port>' to the socket's name, evhtp ignores it)."""

    folder: Path

    @property
    def http(self) -> str:
        return str(self.folder / "http")

    @property
    def metrics(self) -> str:
        return str(self.folder / "metrics")

    @property
    def grpc(self) -> str:
        return str(self.folder / "grpc")

    def arguments(self) -> list[str]:
        return [f"--http-address=unix:{self.http}", "--http-port=1", f"--grpc-address=unix:{self.grpc}",
                "--grpc-port=1", f"--metrics-address=unix:{self.metrics}", "--metrics-port=2"]

    @property
    def grpc_target(self) -> str:
        return f"unix:{self.grpc}:1"


def python_library_dir() -> Path:
    """The folder of this interpreter's shared libpython, which Triton's Python-backend stub loads.

    Without it on LD_LIBRARY_PATH the stub fails inside Python (RLock ... _recursion_count on 3.11,
    a missing libpython3.12.so on 3.12), so the server sets it for its child processes.
    """
    libdir, library = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libdir or not (Path(libdir) / library).is_file():
        raise BackendError(f"this Python ({sys.executable}) has no shared libpython, which Triton's Python backend "
                           "needs", hint="use a Python built with --enable-shared (Debian's python3, the python "
                                         "Docker images, pyenv with PYTHON_CONFIGURE_OPTS=--enable-shared)")
    return Path(libdir)


def check_ports(endpoints: Endpoints) -> None:
    """Refuse ports given twice or already in use, before Triton starts (one clear line, not its log)."""
    ports = endpoints.ports()
    if len(set(ports.values())) < len(ports):
        raise InputError(f"the ports must differ: {', '.join(f'{k} {v}' for k, v in ports.items())}")
    for option, port in ports.items():
        if not 1 <= port <= 65535:
            raise InputError(f"{option} {port} is not a port number (1 to 65535)")
        family = socket.AF_INET6 if ":" in endpoints.address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
            try:
                probe.bind((endpoints.address, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise InputError(f"cannot listen on {endpoints.address}:{port} ({option}): {exc.strerror or exc}",
                                     hint="--address takes an address of this machine (0.0.0.0: all of them)"
                                     ) from None
                raise _port_error(option, port, endpoints.address, exc.strerror) from None


def _port_error(option: str, port: int, address: str, why: str) -> InputError:
    return InputError(f"cannot listen on {address}:{port} ({option}): {why}",
                      hint=f"stop the program that uses port {port}, or choose another with {option} N")


class TritonServer:
    """One tritonserver process serving one semobridge model; `stop` drains it."""

    def __init__(self, settings: ServeSettings, classifier: Classifier, name: str, batching: Batching,
                 endpoints: Endpoints, drain_timeout_s: int = 30, verbose: bool = False,
                 budget: Budget | None = None) -> None:
        self.name, self.endpoints = name, endpoints
        self._settings, self._batching = settings, batching
        self._budget = budget or Budget(max_batch=batching.max_batch)
        self._gate: Gate | None = None
        self._door: GrpcDoor | None = None
        self._upstream: Sockets | None = None  # Triton's own endpoints, in the workspace
        self._classifier: Classifier | None = classifier
        self._drain_timeout_s, self._verbose = drain_timeout_s, verbose
        self._process: subprocess.Popen[str] | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=400)
        self._workspace: Path | None = None

    def start(self) -> None:
        """Start tritonserver and return once the model is ready; raise (and clean up) if it does not get there."""
        dist, libpython = Distribution.find(), python_library_dir()
        check_ports(self.endpoints)
        self._workspace = Path(tempfile.mkdtemp(prefix="semobridge-serve-"))  # mode 0700
        self._upstream = Sockets(self._workspace)
        try:
            up = self._upstream
            if max(len(os.fsencode(p)) for p in (up.http, up.metrics, up.grpc_target.removeprefix("unix:"))) > _SUN_PATH_MAX:
                raise BackendError(f"the temporary folder {self._workspace} has too long a path for Triton's Unix "
                                   f"sockets (at most {_SUN_PATH_MAX} bytes)", hint="set TMPDIR to a shorter folder")
            self._gate = self._open_gate()
            repository = write_repository(self._workspace / "models", self.name, self._classifier,
                                          self._settings, self._batching)
            self._classifier = None  # written out; each instance loads its own
            backends = self._backend_folder(dist)
            self._process = subprocess.Popen(
                [str(dist.tritonserver), *self._arguments(repository, backends, dist)],
                env=self._environment(dist, libpython), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True,
                preexec_fn=_die_with_parent)
            threading.Thread(target=self._read_log, name="tritonserver-log", daemon=True).start()
            self._gate.start()  # health/ready answers (not ready, from Triton) while the model loads
            self._door.start()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> int:
        """SIGTERM: Triton stops accepting requests, finishes those in flight, exits. Returns its exit code."""
        code = 0
        self._close_gate()
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
            try:
                code = self._process.wait(timeout=self._drain_timeout_s + 30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                code = self._process.wait()
        if self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace = None
        return code

    def signal(self, signum: int) -> None:
        """Forward a signal (SIGTERM, SIGINT) to tritonserver, and close the gate's ports (the gRPC door refuses
        new requests, and closes once Triton has answered those it forwarded: stop)."""
        self._close_gate(drain=True)
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signum)

    def _open_gate(self) -> Gate:
        e, up = self.endpoints, self._upstream
        try:
            gate = Gate(e.address, e.http_port, e.metrics_port, up.http, up.metrics, self._budget)
        except OSError as exc:  # taken since check_ports looked
            raise InputError(f"cannot listen on {e.address}:{e.http_port} or :{e.metrics_port}: {exc.strerror or exc}",
                             hint="stop the program that uses the port, or choose others with --http-port and "
                                  "--metrics-port") from None
        try:
            self._door = GrpcDoor(gate, e.address, e.grpc_port, up.grpc_target)
        except OSError as exc:
            gate.close()
            raise _port_error("--grpc-port", e.grpc_port, e.address, exc.strerror or str(exc)) from None
        return gate

    def _close_gate(self, drain: bool = False) -> None:
        if self._gate is not None:
            self._gate.close()
            self._gate = None
        if self._door is not None:
            if drain:
                self._door.drain()
            else:
                self._door.close()
                self._door = None

    def wait(self) -> int:
        """Block until tritonserver exits; its exit code."""
        assert self._process is not None, "start() first"
        return self._process.wait()

    def failure(self) -> str:
        """What tritonserver said that went wrong (its error lines, without the no-GPU noise)."""
        lines = [line for line in self._log if line[:1] == "E" or "rror" in line or "failed" in line.lower()]
        lines = [line for line in lines if not any(noise in line for noise in _NOISE)]
        return " | ".join(lines[-5:]) or (self._log[-1] if self._log else "no output")

    def _backend_folder(self, dist: Distribution) -> Path:
        """backends/python with the stub of this Python beside the backend library (links, not copies)."""
        folder = self._workspace / "backends" / "python"
        folder.mkdir(parents=True)
        for source in (*dist.python_backend.glob("*.so"), *dist.python_backend.glob("*.py"), dist.stub):
            (folder / source.name).symlink_to(source)
        return folder.parent

    def _arguments(self, repository: Path, backends: Path, dist: Distribution) -> list[str]:
        # No --http-restricted-api / --grpc-restricted-protocol: their keys would be on the command line, which
        # every user of the machine reads (`ps`). Only this user reaches Triton's sockets; the gate and the gRPC
        # door forward the APIs clients use (not model repository, shared memory, trace, logging).
        return [
            f"--model-repository={repository}", f"--backend-directory={backends}", f"--cache-directory={dist.caches}",
            *self._upstream.arguments(),
            "--strict-readiness=true", "--exit-on-error=true", f"--exit-timeout-secs={self._drain_timeout_s}",
            f"--log-info={str(self._verbose).lower()}", "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",  # the Python backend exchanges CPU tensors through shared memory
            # shared-memory regions unique to this server, so that several run side by side
            f"--backend-config=python,shm-region-prefix-name=semobridge{os.getpid()}x{self.endpoints.http_port}_",
            "--backend-config=python,shm-growth-byte-size=16777216",
            # no pool of gRPC request/response objects kept for reuse: each kept the buffers of the largest
            # requests it had carried (Triton's heap grew by 90 MB a minute of mixed sizes, not given back)
            "--grpc-infer-allocation-pool-size=0",
        ]

    @staticmethod
    def _environment(dist: Distribution, libpython: Path) -> dict[str, str]:
        env = dict(os.environ)
        here = str(Path(__file__).resolve().parents[2])  # the folder holding semobridge_runtime
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libpython), str(dist.libraries),
                                                             env.get("LD_LIBRARY_PATH")) if p)
        # The stub's embedded Python finds this environment's packages through `python3` on PATH.
        env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH")) if p)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        env.setdefault("ORT_DISABLE_TELEMETRY", "1")
        # glibc: blocks of 1 MiB and more (tensors) are mapped apart and unmapped when freed, instead of staying
        # in the heap at the high-water mark (its default threshold grows to 32 MiB after the first large frees)
        tunables = env.get("GLIBC_TUNABLES", "")
        if "mmap_threshold" not in tunables:
            env["GLIBC_TUNABLES"] = ":".join(t for t in (tunables, f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}") if t)
        return env

    def _read_log(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._log.append(line.rstrip())
            if self._verbose:
                sys.stderr.write(line)

    def _wait_ready(self) -> None:
        """Until Triton says the model itself is ready (its health/ready alone would be true with no model)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                time.sleep(0.2)  # let the log reader catch up
                raise self._startup_error()
            connection = UnixHTTPConnection(self._upstream.http, timeout=1)
            try:
                connection.request("GET", f"/v2/models/{self.name}/ready")
                if connection.getresponse().status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            finally:
                connection.close()
            time.sleep(0.1)
        raise BackendError(f"Triton was not ready after {STARTUP_TIMEOUT_S:.0f} s: {self.failure()}",
                           hint="run with --verbose to see Triton's log")

    def _startup_error(self) -> Exception:
        said = "\n".join(self._log)
        for option, port in self.endpoints.ports().items():
            if f":{port}' already in use" in said or f":{port} already in use" in said:
                return _port_error(option, port, self.endpoints.address, "address already in use")
        return BackendError(f"Triton exited during start-up (code {self._process.returncode}): {self.failure()}",
                            hint="run with --verbose to see Triton's log")


def _die_with_parent() -> None:
    """In the child: SIGTERM it when semobridge-serve dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)

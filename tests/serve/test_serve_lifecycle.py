"""Stopping and starting: SIGTERM drains the requests in flight, the ports are free again at once, and a port
already in use gives one clear line."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import numpy as np

from semobridge_runtime import InputError
from semobridge_runtime.serve import RemoteClassifier

from .conftest import SERVE, free_ports, start_server


def test_sigterm_drains_in_flight_requests_then_restarts_at_once(serve_model, local, tmp_path) -> None:
    ports = free_ports(3)
    served = start_server(serve_model, tmp_path, "--max-batch", "8", ports=ports)
    batch = np.random.default_rng(3).integers(0, 256, (8, 480, 640, 3), dtype=np.uint8)  # ~0.5 s per request here
    expected = local.predict(batch)
    done: list[tuple[float, object]] = []
    first = threading.Event()

    def request() -> None:
        try:
            with RemoteClassifier(served.grpc) as remote:
                done.append((time.monotonic(), remote.predict(batch)))
                first.set()
        except Exception as exc:
            done.append((time.monotonic(), exc))
            first.set()

    threads = [threading.Thread(target=request) for _ in range(6)]
    for t in threads:
        t.start()
    assert first.wait(timeout=120)  # one request of 8 images per model run: the other five are queued or running
    signalled = time.monotonic()
    code = served.stop()
    for t in threads:
        t.join(timeout=120)
    assert code == 0, served.stderr()
    assert "SIGTERM" in served.stderr() and "stopped" in served.stderr()
    assert len(done) == 6
    for _, result in done:
        assert not isinstance(result, Exception), result
        np.testing.assert_array_equal(result.labels, expected.labels)
    assert any(when > signalled for when, _ in done), "nothing was in flight at SIGTERM: the test proves nothing"

    again = start_server(serve_model, tmp_path, ports=ports)  # same ports, at once
    try:
        with RemoteClassifier(again.grpc) as remote:
            np.testing.assert_array_equal(remote.predict(batch[:2]).labels, expected.labels[:2])
    finally:
        assert again.stop() == 0


def test_a_port_in_use_gives_one_clear_line(serve_model) -> None:
    http, grpc, metrics = free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", grpc))
        taken.listen()
        done = subprocess.run([*SERVE, str(serve_model), "--address", "127.0.0.1", "--http-port", str(http),
                               "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == InputError.exit_code
    errors = [line for line in done.stderr.splitlines() if line.startswith("semobridge-serve: error:")]
    assert errors == [f"semobridge-serve: error: cannot listen on 127.0.0.1:{grpc} (--grpc-port): "
                      "Address already in use"], done.stderr
    assert "hint: stop the program that uses port" in done.stderr and "Traceback" not in done.stderr

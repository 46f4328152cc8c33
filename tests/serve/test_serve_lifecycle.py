"""Stopping and starting: SIGTERM drains the requests in flight (those still in transit are refused, and told so),
the ports are free again at once, and a port already in use gives one clear line."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from semobridge_runtime import BackendError, InputError
from semobridge_runtime.serve import RemoteClassifier

from .conftest import SERVE, free_ports, start_server


def pending(served) -> int:
    """Triton's own count of requests accepted and waiting to run (Prometheus gauge)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return int(float(re.search(r'^nv_inference_pending_request_count\{model="semobridge".*\} (\S+)$', text, re.M)[1]))


def large_pngs(n: int, hw: tuple[int, int] = (1536, 2048)) -> list[bytes]:
    """`n` smooth 3-megapixel photos as PNG files: a few kB each to send, a decode and a resize of 3 MP each to run."""
    from PIL import Image

    rng, files = np.random.default_rng(3), []
    for _ in range(n):
        low = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize(hw[::-1], Image.BILINEAR)
        out = io.BytesIO()
        low.save(out, "PNG")
        files.append(out.getvalue())
    return files


def test_sigterm_drains_in_flight_requests_then_restarts_at_once(serve_model, local, tmp_path) -> None:
    from PIL import Image

    ports = free_ports(3)
    # one thread: each request of 8 encoded photos is one model run of a fraction of a second (decoding and resizing
    # on the server) that takes a few kB to send, so the others wait in Triton's queue however fast this machine is
    # (requests of raw pixels took as long to send as to run, and on a fast machine never queued)
    served = start_server(serve_model, tmp_path, "--max-batch", "8", "--threads", "1", ports=ports)
    files = large_pngs(8)
    expected = local.predict([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files])
    clients = [RemoteClassifier(served.grpc) for _ in range(10)]
    results: list[object] = []

    def request(remote: RemoteClassifier) -> None:
        try:
            results.append(remote.predict_encoded(files))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=request, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    deadline, waiting = time.monotonic() + 60, 0
    # poll until 3 are queued; requests answered meanwhile do not end the wait while 3 may still queue
    while waiting < 3 and len(results) <= len(clients) - 3 and time.monotonic() < deadline:
        waiting = pending(served)
    # under load requests may reach Triton one by one: one queued behind the running one still shows the drain; three
    # are the aim
    assert waiting >= 1, f"the requests never queued (pending {waiting}, answered {len(results)}): the test proves nothing"
    served.process.send_signal(signal.SIGTERM)  # with `waiting` requests accepted and not yet run
    for t in threads:
        t.join(timeout=180)
    for c in clients:
        c.close()
    assert served.stop() == 0, served.stderr()
    assert "SIGTERM" in served.stderr() and "stopped" in served.stderr()
    answered = [r for r in results if not isinstance(r, Exception)]
    late = [r for r in results if isinstance(r, Exception)]
    assert len(results) == len(clients) and len(answered) >= waiting + 1  # the queued ones and the one running: none lost
    print(f"\nSIGTERM with {waiting} requests queued: {len(answered)} answered, {len(late)} refused as late")
    for result in answered:
        np.testing.assert_array_equal(result.labels, expected.labels)
    for exc in late:  # still in transit at SIGTERM: refused, and told so
        assert isinstance(exc, BackendError) and "stopping" in str(exc), exc

    again = start_server(serve_model, tmp_path, ports=ports)  # same ports, at once
    try:
        with RemoteClassifier(again.grpc) as remote:
            np.testing.assert_array_equal(remote.predict_encoded(files[:2]).labels, expected.labels[:2])
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


def test_a_closed_stdout_stops_triton_too(serve_model) -> None:
    """`semobridge-serve MODEL | head -0`: the ready line meets a closed pipe; the command exits 141 and takes its
    Triton process with it (before, Triton was left running, its ports taken)."""
    mark = f"semobridge-test-{time.monotonic_ns()}"
    http, grpc, metrics = free_ports(3)
    process = subprocess.Popen([*SERVE, str(serve_model), "--address", "127.0.0.1", "--http-port", str(http),
                                "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env={**os.environ, "SEMOBRIDGE_TEST_MARK": mark})
    process.stdout.close()  # the reader of stdout is gone before the ready line
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 141, stderr.decode()
    assert b"Traceback" not in stderr
    assert marked(mark) == [], "a process of this server outlived semobridge-serve"


def marked(mark: str) -> list[int]:
    """The processes whose environment carries `mark`."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"SEMOBRIDGE_TEST_MARK={mark}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone, or not ours
            continue
    return found

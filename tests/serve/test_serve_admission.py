"""The request check and the byte budgets of semobridge-serve's HTTP front door, without Triton: the check on
bodies built here, the gate in-process in front of a slow loopback HTTP server standing in for Triton."""

from __future__ import annotations

import http.client
import json
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest

from benchmarks.common import free_ports
from semobridge_runtime import InputError
from semobridge_runtime.serve.admission import MIB, Budget, Busy, InFlight, TooLarge, check_infer_body
from semobridge_runtime.serve.gate import Gate

BUDGET = Budget(request_bytes=4 * MIB, inflight_bytes=8 * MIB, max_batch=16)


def body(shape, data, datatype="UINT8", name="image") -> bytes:
    return json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}).encode()


BAD = {  # body -> words the refusal names
    "declared 30 GB, 12 values": (body([1, 100000, 100000, 3], [1] * 12), ["30000000000 bytes", "--max-request-mb"]),
    "negative dimension": (body([1, -4, 4, 3], [1] * 48), ["shape", ">= 0"]),
    "count not the shape's": (body([1, 4, 4, 3], [1, 2, 3]), ["3 values", "holds 48"]),
    "nested count": (body([1, 2, 2, 3], [[[[1, 2, 3]] * 2] * 2] + [[1]]), ["13 values", "holds 12"]),
    "no inputs": (b'{"outputs": []}', ["'inputs'"]),
    "inputs not a list": (b'{"inputs": {"name": "image"}}', ["'inputs'"]),
    "not JSON": (b"hello", ["not valid JSON"]),
    "not UTF-8": (bytes(range(256)) * 4, ["not valid JSON"]),
    "UINT8 300": (body([1, 2, 2, 3], [300] + [1] * 11), ["from 0 to 255", "300"]),
    "UINT8 -1": (body([1, 2, 2, 3], [-1] + [1] * 11), ["from 0 to 255"]),
    "UINT8 float": (body([1, 2, 2, 3], [0.5] * 12), ["integers"]),
    "batch over max": (body([17, 1, 1, 3], [1] * 51), ["batch of 17", "--max-batch 16"]),
    "bool dimension": (body([True, 1, 1, 3], [1] * 3), ["shape"]),
    "rank 9": (body([1] * 9, [1]), ["shape"]),
    "unknown datatype": (body([1, 1, 1, 3], [1] * 3, "UINT7"), ["datatype 'UINT7'"]),
    "BYTES not strings": (body([1, 1], [5], "BYTES", "encoded"), ["strings"]),
    "no data": (b'{"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 1, 3]}]}', ["no 'data'"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_bodies_are_refused_with_their_reason(case) -> None:
    raw, words = BAD[case]
    with pytest.raises(InputError) as refused:
        check_infer_body(raw, None, BUDGET)
    for word in words:
        assert word in str(refused.value), refused.value


def test_valid_bodies_give_the_bytes_triton_will_allocate() -> None:
    pixels = np.arange(2 * 5 * 7 * 3).astype(np.uint8).reshape(2, 5, 7, 3)
    assert check_infer_body(body(list(pixels.shape), pixels.reshape(-1).tolist()), None, BUDGET) == pixels.nbytes
    assert check_infer_body(body(list(pixels.shape), pixels.tolist()), None, BUDGET) == pixels.nbytes  # nested
    assert check_infer_body(body([2, 1], ["a", "b"], "BYTES", "encoded"), None, BUDGET) == 0
    # the binary extension: a JSON header, then the tensor's bytes
    header = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": list(pixels.shape),
                                     "parameters": {"binary_data_size": pixels.nbytes}}]}).encode()
    assert check_infer_body(header + pixels.tobytes(), len(header), BUDGET) == pixels.nbytes
    with pytest.raises(InputError, match="binary_data_size add up to 210 bytes, but 209"):
        check_infer_body(header + pixels.tobytes()[:-1], len(header), BUDGET)
    with pytest.raises(TooLarge, match="--max-request-mb"):
        check_infer_body(body([16, 1024, 1024, 3], [0]), None, BUDGET)  # 48 MiB declared, budget 4


def test_in_flight_budget() -> None:
    inflight = InFlight(10)
    inflight.take(6)
    with pytest.raises(Busy, match="--max-inflight-mb"):
        inflight.take(5)
    inflight.give(6)
    inflight.take(10)
    assert inflight.used == 10


class SlowTriton(BaseHTTPRequestHandler):
    """Stands in for Triton's HTTP port: answers an inference after 1 s, and only with the gate's key."""

    protocol_version = "HTTP/1.1"
    arrived = threading.Semaphore(0)  # released as each request reaches it

    def log_message(self, *_args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        data = self.rfile.read(int(self.headers["Content-Length"]))
        SlowTriton.arrived.release()
        time.sleep(1.0)
        unloaded = self.headers.get("X-Test-Unloaded") is not None  # as Triton answers once SIGTERM unloaded the model
        answer = json.dumps({"error": "Request for unknown model: 'semobridge' has no available versions"} if unloaded
                            else {"bytes": len(data), "type": self.headers.get("Content-Type")}).encode()
        self.send_response(400 if unloaded else 200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture()
def gate(tmp_path):
    upstream = UnixHTTPServer(str(tmp_path / "http"), SlowTriton)  # as Triton's, on a Unix socket
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    http_port, metrics_port = free_ports(2)
    front = Gate("127.0.0.1", http_port, metrics_port, str(tmp_path / "http"), str(tmp_path / "metrics"), BUDGET)
    front.start()
    yield front, http_port
    front.close()
    upstream.shutdown()
    upstream.server_close()


def post(port: int, raw: bytes, headers: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/v2/models/semobridge/infer", body=raw, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_gate_forwards_and_refuses_beyond_the_in_flight_budget(gate) -> None:
    front, port = gate
    pixels = np.zeros((1, 1024, 1024, 3), np.uint8)  # 3 MiB; with its 3 MiB body a request holds 6 of the 8 MiB
    header = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": list(pixels.shape),
                                     "parameters": {"binary_data_size": pixels.nbytes}}]}).encode()
    raw = header + pixels.tobytes()
    answers: list[tuple[int, dict]] = []
    threads = [threading.Thread(target=lambda: answers.append(post(port, raw, {
        "Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/x-www-form-urlencoded"})))
        for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.3)  # the first is held upstream when the second arrives
    for t in threads:
        t.join(timeout=60)
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200, 429], answers
    ok = next(answer for status, answer in answers if status == 200)
    assert ok == {"bytes": len(raw), "type": "application/octet-stream"}
    busy = next(answer for status, answer in answers if status == 429)["error"]
    assert busy.startswith("runtime error: the server holds") and "--max-inflight-mb" in busy
    deadline = time.monotonic() + 10
    while front.inflight.used and time.monotonic() < deadline:  # given back once the answer is written
        time.sleep(0.01)
    assert front.inflight.used == 0 and front.refused["busy"] == 1
    assert post(port, raw, {"Inference-Header-Content-Length": str(len(header))})[0] == 200  # budget given back


def test_a_request_that_reaches_triton_after_sigterm_hears_the_server_is_stopping(gate) -> None:
    front, port = gate
    body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 2, 2, 3],
                                   "data": [0] * 12}]}).encode()
    assert post(port, body, {"X-Test-Unloaded": "1"})[0] == 400  # not stopping: Triton's answer as it is
    while SlowTriton.arrived.acquire(timeout=0):  # forget the earlier arrivals
        pass
    answers: list[tuple[int, dict]] = []
    late = threading.Thread(target=lambda: answers.append(post(port, body, {"X-Test-Unloaded": "1"})))
    late.start()
    assert SlowTriton.arrived.acquire(timeout=30)  # held upstream
    front.close()  # SIGTERM: the gate stops listening, Triton unloads the model
    late.join(timeout=60)
    assert answers and answers[0][0] == 503, answers
    assert answers[0][1]["error"].startswith("runtime error: the server is stopping; hint: retry")
    assert front.refused["unavailable"] == 1 and front.refused["triton"] == 1  # the first, before SIGTERM


def headers_only(port: int, headers: bytes) -> str:
    """The answer to an inference request's headers, its body never sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /v2/models/semobridge/infer HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        return b"".join(iter(lambda: s.recv(65536), b"")).decode()  # until the gate closes the connection


def test_gate_refuses_an_oversized_body_before_it_is_sent(gate) -> None:
    front, port = gate
    answer = headers_only(port, b"Content-Length: 300000000\r\nInference-Header-Content-Length: 100\r\n"
                                b"Expect: 100-continue\r\n")
    assert answer.startswith("HTTP/1.1 400") and "100 Continue" not in answer
    assert "300000000 bytes, over the 4 MiB a request may carry (--max-request-mb)" in answer
    answer = headers_only(port, b"Content-Length: %d\r\n" % (17 * MIB))  # JSON: 16 MiB at most
    assert answer.startswith("HTTP/1.1 400") and "JSON request body may hold 16 MiB" in answer
    assert front.refused["too_large"] == 2
    for path in ("/v2/repository/index", "/v2/systemsharedmemory/status"):  # Triton's admin APIs stay closed
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", path, body=b"{}")
        assert connection.getresponse().status == 404
        connection.close()


def test_the_model_refuses_a_request_over_the_budget_before_decoding_or_running(local) -> None:
    """Over gRPC, Triton hands the model what it read: pixels, or files whose headers declare their pixels."""
    from concurrent.futures import ThreadPoolExecutor

    from semobridge_runtime.serve.execution import Request, run_batch

    from .conftest import png

    pixels = np.zeros((2, 64, 64, 3), np.uint8)  # 24576 bytes
    flat = np.zeros((1, 1, 1, 3), np.uint8)
    encoded = np.array([[png(np.zeros((512, 512, 3), np.uint8))]], dtype=object)  # ~1 KB declaring 768 KiB
    with ThreadPoolExecutor(2) as pool:
        results = run_batch(local, [Request(pixels, None), Request(flat, None), Request(None, encoded)], pool,
                            budget=20000)
        assert isinstance(results[0], TooLarge) and "24576 bytes" in str(results[0])
        assert isinstance(results[2], TooLarge) and "--max-request-mb" in str(results[2])
        np.testing.assert_allclose(results[1]["scores"], local.predict(flat).scores, atol=1e-5)  # the others run
        assert not any(isinstance(r, Exception) for r in run_batch(local, [Request(pixels, None)], pool, budget=24576))


def test_gate_answers_on_a_kept_alive_connection_without_waiting_for_acks(gate) -> None:
    """Its answers are two writes (headers, body): with Nagle's algorithm on, the body waited for the client's
    delayed ACK, ~40 ms a request (HTTP ran at 20 requests/s where gRPC ran at 300)."""
    _, port = gate
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    try:
        for _ in range(21):
            start = time.perf_counter()
            connection.request("GET", "/v2/nothing")
            response = connection.getresponse()
            response.read()
            times.append(time.perf_counter() - start)
            assert response.status == 404
    finally:
        connection.close()
    assert sorted(times)[10] < 0.02, f"median {sorted(times)[10] * 1000:.0f} ms a request"

"""semobridge-serve's gRPC front door: the per-request and in-flight budgets over gRPC, and their refusals counted.

In-process: the door in front of a slow loopback gRPC server standing in for Triton. Then the real server."""

from __future__ import annotations

import concurrent.futures
import re
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from benchmarks.common import free_ports
from semobridge_runtime.serve import RemoteClassifier
from semobridge_runtime.serve.admission import MIB, Budget
from semobridge_runtime.serve.gate import Gate
from semobridge_runtime.serve.grpc_door import INFER, SERVICE, STREAM, GrpcDoor, receive_limit

BUDGET = Budget(request_bytes=4 * MIB, inflight_bytes=8 * MIB, max_batch=16)


REFUSALS = {b"batch": "[request id: <id_unknown>] inference request batch-size must be <= 32 for 'semobridge'",
            b"image": "[request id: 7] input error: image 0 is not an image file; hint: send JPEG or PNG",
            b"unloaded": "Request for unknown model: 'semobridge' has no available versions"}  # after SIGTERM


class Upstream(grpc.GenericRpcHandler):
    """Triton's stand-in: answers every call with its size and the metadata it was given, once `release` is set."""

    def __init__(self) -> None:
        self.release, self.arrived = threading.Event(), threading.Semaphore(0)

    def service(self, details):
        def answer(request: bytes, context) -> bytes:
            self.arrived.release()
            self.release.wait(30)
            if request in REFUSALS:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, REFUSALS[request])
            return f"{len(request)} {dict(context.invocation_metadata()).get('x-caller', '')}".encode()
        return grpc.unary_unary_rpc_method_handler(answer)


@pytest.fixture()
def door(tmp_path):
    upstream = Upstream()
    triton = grpc.server(concurrent.futures.ThreadPoolExecutor(8), handlers=[upstream],
                         options=[("grpc.max_receive_message_length", -1)])
    assert triton.add_insecure_port(f"unix:{tmp_path}/grpc") == 1  # as Triton's, on a Unix socket
    triton.start()
    http_port, metrics_port, grpc_port = free_ports(3)
    gate = Gate("127.0.0.1", http_port, metrics_port, str(tmp_path / "http"), str(tmp_path / "metrics"), BUDGET)
    front = GrpcDoor(gate, "127.0.0.1", grpc_port, f"unix:{tmp_path}/grpc")
    gate.start()
    front.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=[("grpc.max_send_message_length", -1)])
    call = channel.unary_unary(INFER)
    yield front, upstream, lambda message, **kw: call(message, metadata=[("x-caller", "me")], **kw), channel
    upstream.release.set()
    channel.close()
    front.close(0)
    gate.close()
    triton.stop(0)


def counted(read, reason: str, expected: int, timeout: float = 10.0) -> int:
    """semobridge_grpc_refused_total{reason} once it reaches `expected`, or its value at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(rf'^semobridge_grpc_refused_total\{{reason="{reason}"\}} (\d+)$', read(), re.M)
        value = int(found[1]) if found else -1
        if value >= expected or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_a_grpc_message_over_the_budget_is_refused_naming_the_option_counted_before_the_answer(door) -> None:
    front, upstream, infer, _ = door
    upstream.release.set()
    assert receive_limit(BUDGET.request_bytes) == 5 * MIB
    for size in (4 * MIB + 1, 5 * MIB):
        with pytest.raises(grpc.RpcError) as refused:
            infer(b"\0" * size, timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"is {size} bytes, over the 4 MiB" in refused.value.details()
        assert "--max-request-mb" in refused.value.details() and "hint: " in refused.value.details()
    assert front.gate.grpc_refused["too_large"] == 2  # counted before the client heard the refusal
    assert infer(b"\1" * (4 * MIB), timeout=30) == f"{4 * MIB} me".encode()  # the budget itself passes
    assert front.gate.inflight.used == 0


def test_a_far_larger_grpc_message_is_cut_off_by_grpc_while_it_arrives_and_counted(door) -> None:
    front, upstream, infer, _ = door
    upstream.release.set()
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as refused:
            infer(b"\0" * (64 * MIB), timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in refused.value.details()
    assert counted(front.gate.metrics, "too_large", 3) == 3
    assert infer(b"\1" * 1000, timeout=30) == b"1000 me"  # forwarded, with the caller's metadata


def test_a_grpc_call_without_its_message_is_refused(door) -> None:
    front, _, _, channel = door
    with pytest.raises(grpc.RpcError) as refused:
        channel.stream_unary(INFER)(iter([]), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sent none" in refused.value.details()
    assert front.gate.grpc_refused["invalid"] == 1 and front.gate.grpc_refused["too_large"] == 0


def test_triton_s_own_grpc_refusals_are_counted_the_model_s_are_not(door) -> None:
    """The model counts its refusals itself (semobridge_model_refused_total); Triton's were counted nowhere."""
    front, upstream, infer, _ = door
    upstream.release.set()
    for request, words in ((b"batch", "batch-size must be <= 32"), (b"image", "input error: image 0")):
        with pytest.raises(grpc.RpcError) as refused:
            infer(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in refused.value.details()
    assert front.gate.grpc_refused["triton"] == 1 and sum(front.gate.grpc_refused.values()) == 1


def test_a_request_that_reaches_triton_after_sigterm_hears_the_server_is_stopping(door) -> None:
    """Past the door's check when SIGTERM came, it met the model unloaded: 'unknown model' read as the client's
    mistake (InputError) where a retry on another replica is the answer (CI failed on it once)."""
    front, upstream, infer, channel = door
    late = channel.unary_unary(INFER).future(b"unloaded", timeout=30)
    assert upstream.arrived.acquire(timeout=30)
    front.drain()
    upstream.release.set()
    with pytest.raises(grpc.RpcError) as refused:
        late.result()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details().startswith("runtime error: the server is stopping; hint: retry")
    assert front.gate.grpc_refused["unavailable"] == 1 and front.gate.grpc_refused["triton"] == 0


def test_an_unknown_model_before_sigterm_is_triton_s_answer(door) -> None:
    front, upstream, infer, _ = door
    upstream.release.set()
    with pytest.raises(grpc.RpcError) as refused:
        infer(b"unloaded", timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown model" in refused.value.details()


def test_grpc_requests_in_flight_share_the_servers_budget(door) -> None:
    front, upstream, infer, channel = door
    held = [channel.unary_unary(INFER).future(b"\2" * (3 * MIB), timeout=30) for _ in range(2)]
    for _ in held:
        assert upstream.arrived.acquire(timeout=30)
    assert front.gate.inflight.used == 6 * MIB  # the same counter as the HTTP side's
    with pytest.raises(grpc.RpcError) as refused:
        infer(b"\3" * (3 * MIB), timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-inflight-mb" in refused.value.details() and "retry" in refused.value.details()
    upstream.release.set()
    assert [f.result() for f in held] == [f"{3 * MIB} ".encode()] * 2
    assert front.gate.inflight.used == 0
    assert infer(b"\3" * (3 * MIB), timeout=30) == f"{3 * MIB} me".encode()
    assert 'semobridge_grpc_refused_total{reason="busy"} 1' in front.gate.metrics()


def test_streaming_and_the_apis_that_change_the_server_are_refused_as_unimplemented(door) -> None:
    front, upstream, _, channel = door
    upstream.release.set()
    with pytest.raises(grpc.RpcError) as refused:
        list(channel.stream_stream(STREAM)(iter([b"x"]), timeout=30))
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED and "ModelInfer" in refused.value.details()
    for method in ("RepositoryModelLoad", "SystemSharedMemoryRegister", "TraceSetting", "LogSettings"):
        with pytest.raises(grpc.RpcError) as refused:  # Triton would do them: its socket takes no key
            channel.unary_unary(SERVICE + method)(b"", timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED and method in refused.value.details()
    assert front.gate.grpc_refused["not_found"] == 5
    assert upstream.arrived.acquire(timeout=0) is False  # none reached Triton


def test_the_server_refuses_a_grpc_request_over_its_budget_and_keeps_serving(server, local, photos) -> None:
    channel = grpc.insecure_channel(server.grpc, options=[("grpc.max_send_message_length", -1)])
    try:
        with pytest.raises(grpc.RpcError) as refused:  # over --max-request-mb (256): never reaches Triton
            channel.unary_unary(INFER)(bytes(257 * MIB), timeout=120)
    finally:
        channel.close()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the 256 MiB a request may carry (--max-request-mb)" in refused.value.details()
    with RemoteClassifier(server.grpc) as remote:
        np.testing.assert_array_equal(remote.predict(photos[0]).labels, local.predict(photos[0]).labels)

    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
            return response.read().decode()
    assert counted(metrics, "too_large", 1) >= 1
    before = counted(metrics, "triton", 0)
    request = service_pb2.ModelInferRequest(model_name="semobridge", inputs=[service_pb2.ModelInferRequest.InferInputTensor(
        name="image", datatype="UINT8", shape=[1, 100, 100, 3])], raw_input_contents=[bytes(12)])
    channel = grpc.insecure_channel(server.grpc)
    try:
        with pytest.raises(grpc.RpcError) as refused:  # Triton's own front-end refuses it
            channel.unary_unary(INFER)(request.SerializeToString(), timeout=60)
    finally:
        channel.close()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "30000" in refused.value.details()
    assert counted(metrics, "triton", before + 1) == before + 1

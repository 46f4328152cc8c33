"""semobridge-serve's gRPC front door: the public gRPC port, in front of Triton's own on a Unix socket.

A message over the per-request budget (--max-request-mb) is refused with RESOURCE_EXHAUSTED naming the
option: up to a quarter over it, by the door once received (counted, then answered); beyond that, by gRPC
itself while it arrives, before it is buffered whole ('Received message larger than max'; counted when the
handler sees the call end, just after the client hears it). A message received is counted against the server's
in-flight budget (--max-inflight-mb, shared with the HTTP side) until Triton answers; over it the request is
refused with RESOURCE_EXHAUSTED. The methods of inference.GRPCInferenceService that clients use (FORWARDED)
are forwarded as raw bytes, with the caller's metadata and deadline, to Triton's gRPC endpoint on a Unix socket
only this user may reach (server.py); the others (model repository, shared memory, trace, logging, and
ModelStreamInfer) are refused with UNIMPLEMENTED. At most WORKERS messages are received at once.
Refusals are counted on the metrics port (`semobridge_grpc_refused_total`), the door's and Triton's (reason
triton: an error that is not the model's).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from ..errors import InputError
from .admission import MIB, Busy, TooLarge
from .gate import STOPPING, UNLOADED, UPSTREAM_TIMEOUT_S, Gate
from .protocol import error_text

SERVICE = "/inference.GRPCInferenceService/"
STREAM = SERVICE + "ModelStreamInfer"
INFER = SERVICE + "ModelInfer"
WORKERS = 16
ENDED_WAIT_S = 1.0  # after an empty request stream: how long to wait for the call to end (gRPC refused it)
FORWARDED = frozenset(SERVICE + name for name in (
    "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig", "ModelStatistics",
    "ModelInfer"))
_HOP = {"user-agent", "grpc-accept-encoding", "grpc-timeout"}
_OURS = re.compile(r"^(\[request id: [^\]]*\] )?(input|model|runtime|internal) error: ")  # the model's refusals


class GrpcDoor:
    """A grpc.server on the public gRPC port forwarding to Triton's gRPC endpoint (`upstream`: a gRPC target,
    unix:PATH in semobridge-serve)."""

    def __init__(self, gate: Gate, address: str, port: int, upstream: str) -> None:
        self.gate, self.draining = gate, False
        if sys.platform.startswith("linux"):  # messages of 1 MiB and more mapped apart and unmapped when freed
            ctypes.CDLL(None).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (as Triton's GLIBC_TUNABLES, server.py)
        limit = receive_limit(gate.budget.request_bytes)
        self._channel = grpc.insecure_channel(upstream, options=[
            ("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", -1),
            ("grpc.enable_http_proxy", 0)])
        self._server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="grpc-door"),
            handlers=[_Handler(self)],
            options=[("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0)])
        host = f"[{address}]" if ":" in address else address
        try:
            bound = self._server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            bound = 0
        if bound != port:
            self._channel.close()
            raise OSError(98, "Address already in use")

    def start(self) -> None:
        self._server.start()

    def drain(self) -> None:
        """Refuse new requests (UNAVAILABLE, 'stopping'); those forwarded already are still answered."""
        self.draining = True

    def close(self, grace_s: float = 5.0) -> None:
        self.draining = True
        self._server.stop(grace_s).wait()
        self._channel.close()

    def forward(self, method: str, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        """Receive one message, hold its bytes against the in-flight budget, and forward it to Triton."""
        gate = self.gate
        ended = threading.Event()
        context.add_callback(ended.set)
        try:
            message = next(requests)
        except StopIteration:  # a client that sent no message, or gRPC ended the call (as below) first
            if ended.wait(ENDED_WAIT_S):
                gate.count("too_large", "grpc")
                return b""
            gate.count("invalid", "grpc")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, error_text(InputError(
                f"{method.rsplit('/', 1)[-1]} takes exactly one request message, this call sent none")))
        except grpc.RpcError:  # over receive_limit (gRPC has answered RESOURCE_EXHAUSTED), or cancelled
            gate.count("too_large", "grpc")
            raise
        if len(message) > gate.budget.request_bytes:
            gate.count("too_large", "grpc")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, error_text(TooLarge(
                f"the request message is {len(message)} bytes, over the {gate.budget.request_bytes // MIB} MiB a "
                "request may carry (--max-request-mb)", hint="send fewer or smaller images per request, or start "
                                                              "the server with a larger --max-request-mb")))
        if self.draining:
            gate.count("unavailable", "grpc")
            context.abort(grpc.StatusCode.UNAVAILABLE, error_text(STOPPING))
        held = len(message) if method == INFER else 0
        try:
            gate.inflight.take(held)
        except Busy as exc:
            gate.count("busy", "grpc")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"runtime error: {exc}; hint: retry in a moment, or send smaller requests")
        try:
            metadata = [(k, v) for k, v in context.invocation_metadata() if k.lower() not in _HOP]
            remaining = context.time_remaining()
            call = self._channel.unary_unary(method)
            try:
                response, outcome = call.with_call(message, metadata=metadata,
                                                   timeout=UPSTREAM_TIMEOUT_S if remaining is None else
                                                   max(0.0, min(remaining, UPSTREAM_TIMEOUT_S)))
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.UNAVAILABLE:
                    gate.count("unavailable", "grpc")
                    context.abort(code, "runtime error: the server is starting, stopping, or its Triton process "
                                        f"is gone ({(exc.details() or '')[:200]}); hint: retry in a moment, or on another replica")
                details = exc.details() or ""
                if self.draining and UNLOADED in details:  # passed the check above, reached Triton after SIGTERM
                    gate.count("unavailable", "grpc")
                    context.abort(grpc.StatusCode.UNAVAILABLE, error_text(STOPPING))
                if code not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED) and not _OURS.match(details):
                    gate.count("triton", "grpc")  # Triton's own refusal (byte size, batch size against the config)
                context.set_trailing_metadata(exc.trailing_metadata() or ())
                context.abort(code, details)
            context.set_trailing_metadata(outcome.trailing_metadata() or ())
            return response
        finally:
            gate.inflight.give(held)


def receive_limit(request_bytes: int) -> int:
    """The largest message gRPC receives whole: a quarter over the budget (at least 1 MiB), so that a request a
    little too large hears which option bounds it, and a far larger one is cut off while it arrives."""
    return request_bytes + max(MIB, request_bytes // 4)


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, door: GrpcDoor) -> None:
        self._door = door

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        if method not in FORWARDED:
            return grpc.stream_stream_rpc_method_handler(lambda requests, context: self._refuse(method, context))
        return grpc.stream_unary_rpc_method_handler(lambda requests, context: self._door.forward(method, requests,
                                                                                                 context))

    def _refuse(self, method: str, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._door.gate.count("not_found", "grpc")
        hint = (f"send ModelInfer requests (one batch of at most {self._door.gate.budget.request_bytes // MIB} MiB "
                "each)" if method == STREAM else "the APIs that change the server are closed")
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"semobridge-serve does not serve {method[:100]}; hint: {hint}")
        yield b""  # a generator, as a stream-stream handler is

"""semobridge-serve's HTTP front door: the public HTTP and metrics ports, in front of Triton's own on loopback.

Every HTTP request is checked here before Triton sees it (admission.py): its length against the
per-request budget before a byte of the body is read, its bytes against the server's in-flight budget,
and an inference body's JSON (shapes, counts, ranges) before Triton allocates for it. Refused requests get
400 (or 429 when the in-flight budget is spent) with '<kind>: <message>; hint: <hint>' in Triton's error
format, and are counted on the metrics port (`semobridge_http_refused_total`). Only the endpoints clients
need are forwarded (health, metadata, config, statistics, inference), to Triton's HTTP and metrics endpoints
on Unix sockets in a folder only this user may enter (server.py): no key to guard them, none in `ps`.
"""

from __future__ import annotations

import collections
import http.client
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ..errors import BackendError, InputError, SemobridgeError
from .admission import Budget, Busy, InFlight, TooLarge, check_infer_body, check_length
from .protocol import error_text

IDLE_TIMEOUT_S = 60  # a connection silent this long (idle, or a body trickling in) is closed
UPSTREAM_TIMEOUT_S = 600  # a request may queue in Triton this long
MAX_CONNECTIONS = 512
SMALL_BODY = 64 << 10  # requests other than inference carry no body worth more
_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[0-9]+)?/infer$")
_READ = re.compile(r"^/v2(/health/(live|ready)|/models/stats|/models/[^/]+(/versions/[0-9]+)?(/(ready|config|stats))?)?/?$")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host",
        "content-length", "expect"}
REASONS = ("invalid", "too_large", "busy", "unavailable", "not_found", "triton")
_OURS = re.compile(rb'^\{"error":"(\[request id: [^\]]*\] )?(input|model|runtime|internal) error: ')  # the model's
UNLOADED = "Request for unknown model"  # Triton's answer once SIGTERM has unloaded the model
STOPPING = BackendError("the server is stopping", hint="retry on another replica, or in a moment")


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a server on a Unix socket (Triton's endpoints behind the gate)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        try:
            self.sock.connect(self._path)
        except OSError:
            self.sock.close()
            raise


class Gate:
    """The two front-door servers (API and metrics) and what they share: the budget, Triton's sockets, the counters.

    `upstream_http`, `upstream_metrics`: the Unix sockets of Triton's HTTP and metrics endpoints."""

    def __init__(self, address: str, http_port: int, metrics_port: int, upstream_http: str, upstream_metrics: str,
                 budget: Budget) -> None:
        self.budget, self.inflight = budget, InFlight(budget.inflight_bytes)
        self.upstream_http, self.upstream_metrics = upstream_http, upstream_metrics
        self.refused: collections.Counter[str] = collections.Counter({reason: 0 for reason in REASONS})
        self.grpc_refused: collections.Counter[str] = collections.Counter({reason: 0 for reason in REASONS})
        self.stopping = False  # set by close(): Triton is unloading the model
        self._lock = threading.Lock()
        api = _Server((address, http_port), _ApiHandler, self)
        try:
            self._servers = [api, _Server((address, metrics_port), _MetricsHandler, self)]
        except OSError:
            api.server_close()
            raise

    def start(self) -> None:
        for server in self._servers:
            threading.Thread(target=server.serve_forever, name=f"gate-{server.server_port}", daemon=True).start()

    def close(self) -> None:
        """Stop accepting connections (requests already read are still answered)."""
        self.stopping = True
        for server in self._servers:
            if server.serving:
                server.serving = False
                server.shutdown()
            server.server_close()

    def count(self, reason: str, protocol: str = "http") -> None:
        with self._lock:
            (self.refused if protocol == "http" else self.grpc_refused)[reason] += 1

    def metrics(self) -> str:
        """The gate's counters in Prometheus text format."""
        with self._lock:
            refused, grpc_refused = dict(self.refused), dict(self.grpc_refused)
        lines = ["# HELP semobridge_http_refused_total HTTP requests refused before the model saw them: by "
                 "semobridge-serve's front door, or (reason triton) by Triton",
                 "# TYPE semobridge_http_refused_total counter",
                 *(f'semobridge_http_refused_total{{reason="{r}"}} {n}' for r, n in refused.items()),
                 "# HELP semobridge_grpc_refused_total gRPC requests refused before the model saw them: by "
                 "semobridge-serve's gRPC door (invalid: a call without its message; too_large: over --max-request-mb, "
                 "or cancelled while arriving), or (reason triton) by Triton",
                 "# TYPE semobridge_grpc_refused_total counter",
                 *(f'semobridge_grpc_refused_total{{reason="{r}"}} {n}' for r, n in grpc_refused.items()),
                 "# HELP semobridge_inflight_bytes Bytes of HTTP and gRPC requests in flight (budget: --max-inflight-mb)",
                 "# TYPE semobridge_inflight_bytes gauge",
                 f"semobridge_inflight_bytes {self.inflight.used}",
                 "# HELP semobridge_inflight_budget_bytes The server's in-flight budget (--max-inflight-mb)",
                 "# TYPE semobridge_inflight_budget_bytes gauge",
                 f"semobridge_inflight_budget_bytes {self.inflight.limit}"]
        return "\n".join(lines) + "\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], gate: Gate) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.gate, self.serving = gate, True
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # too many connections: drop this one at once
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version, sys_version = "semobridge-serve", ""
    timeout = IDLE_TIMEOUT_S
    disable_nagle_algorithm = True  # the answer is two writes (headers, body): Nagle held the body ~40 ms
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (no access log)
        pass

    def send(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None,
             close: bool = False) -> None:
        self.send_response(status)
        for name, value in headers or [("Content-Type", "application/json")]:
            if name.lower() not in _HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def refuse(self, status: int, error: SemobridgeError | str, reason: str, close: bool = False) -> None:
        self.server.gate.count(reason)
        text = error_text(error) if isinstance(error, SemobridgeError) else error
        extra = [("Retry-After", "1")] if status in (429, 503) else []
        self.send(status, json.dumps({"error": text}).encode(), [("Content-Type", "application/json"), *extra], close)

    def body_length(self) -> int | None:
        """Content-Length (0 if absent); None after refusing a body we will not read."""
        if "Transfer-Encoding" in self.headers or self.headers.get("Content-Encoding", "identity") != "identity":
            self.refuse(411 if "Transfer-Encoding" in self.headers else 415, InputError(
                "send the body whole and uncompressed, with a Content-Length"), "invalid", close=True)
            return None
        text = self.headers.get("Content-Length", "0")
        if not text.isdigit() or len(text) > 18:
            self.refuse(400, InputError(f"Content-Length {text[:20]!r} is not a byte count"), "invalid", close=True)
            return None
        return int(text)


class _ApiHandler(_Handler):
    """The public HTTP port: KServe v2 requests, checked, then forwarded to Triton."""

    _upstream: UnixHTTPConnection | None = None

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def finish(self) -> None:
        super().finish()
        if self._upstream is not None:
            self._upstream.close()

    def handle_expect_100(self) -> bool:
        """Refuse a body over the budget before the client sends it (instead of '100 Continue')."""
        text = self.headers.get("Content-Length", "")
        try:
            check_length(int(text) if text.isdigit() else 0, self.server.gate.budget,
                         binary="Inference-Header-Content-Length" in self.headers)
        except TooLarge as exc:
            self.refuse(400, exc, "too_large", close=True)
            return False
        return super().handle_expect_100()

    def _serve(self) -> None:
        path = urlsplit(self.path).path
        infer = self.command == "POST" and _INFER.match(path) is not None
        if not infer and not (self.command == "GET" and _READ.match(path)):
            self.refuse(404, f"semobridge-serve does not serve {self.command} {path[:100]}", "not_found",
                        close="Content-Length" in self.headers)
            return
        length = self.body_length()
        if length is None:
            return
        gate = self.server.gate
        if not infer:
            if length > SMALL_BODY:
                self.refuse(400, InputError(f"a {self.command} {path[:100]} carries no body"), "invalid", close=True)
                return
            self._forward(self.rfile.read(length))
            return
        try:
            check_length(length, gate.budget, binary="Inference-Header-Content-Length" in self.headers)
        except InputError as exc:
            self.refuse(400, exc, "too_large", close=True)
            return
        held = 0
        try:
            gate.inflight.take(length)
            held = length
            body = self.rfile.read(length)
            if len(body) < length:  # the client went away
                self.close_connection = True
                return
            declared = check_infer_body(body, self._header_length(), gate.budget)
            gate.inflight.take(declared)
            held += declared
            self._forward(body)
        except Busy as exc:
            if held == 0:  # the body is still coming: read it past, holding 64 KiB at a time, so the client hears
                left = length
                while left > 0 and (chunk := self.rfile.read(min(SMALL_BODY, left))):
                    left -= len(chunk)
            self.refuse(429, BackendError(str(exc), hint="retry in a moment, or send smaller requests"), "busy")
        except InputError as exc:
            self.refuse(400, exc, "too_large" if isinstance(exc, TooLarge) else "invalid")
        finally:
            gate.inflight.give(held)

    def _header_length(self) -> int | None:
        text = self.headers.get("Inference-Header-Content-Length")
        if text is None:
            return None
        if not text.isdigit() or len(text) > 18:
            raise InputError(f"Inference-Header-Content-Length {text[:20]!r} is not a byte count")
        return int(text)

    def _forward(self, body: bytes) -> None:
        """Send the request to Triton and its answer back; 503 if Triton is not there (stopping, or gone)."""
        gate = self.server.gate
        headers = {name: value for name, value in self.headers.items() if name.lower() not in _HOP | {"content-type"}}
        # The type is ours: Triton (its libevhtp) has died of large bodies sent as form data.
        binary = "Inference-Header-Content-Length" in self.headers
        headers["Content-Type"] = "application/octet-stream" if binary else "application/json"
        for attempt in range(2):
            reused = self._upstream is not None
            if not reused:
                self._upstream = UnixHTTPConnection(gate.upstream_http, timeout=UPSTREAM_TIMEOUT_S)
            try:
                self._upstream.request(self.command, self.path, body=body, headers=headers)
                response = self._upstream.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, OSError) as exc:
                self._upstream.close()
                self._upstream = None
                stale = isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                if not (reused and stale and attempt == 0):  # only a kept-alive connection Triton closed is retried
                    self.refuse(503, BackendError("the server is starting, stopping, or its Triton process is gone",
                                                  hint="retry in a moment, or on another replica"), "unavailable")
                    return
        if response.status >= 400 and gate.stopping and UNLOADED.encode() in data[:200]:  # reached Triton too late
            self.refuse(503, STOPPING, "unavailable")
            return
        if response.status >= 400 and not _OURS.match(data):  # Triton's own refusal (dtype, shape against the config)
            gate.count("triton")
        self.send(response.status, data, response.getheaders())


class _MetricsHandler(_Handler):
    """The public metrics port: Triton's Prometheus metrics, then the gate's."""

    def do_GET(self) -> None:  # noqa: N802
        if urlsplit(self.path).path != "/metrics":
            self.refuse(404, f"semobridge-serve's metrics port serves GET /metrics, not {self.path[:100]}", "not_found")
            return
        gate = self.server.gate
        connection = UnixHTTPConnection(gate.upstream_metrics, timeout=30)
        try:
            connection.request("GET", "/metrics")
            triton = connection.getresponse().read()
        except (http.client.HTTPException, OSError):
            triton = b""
        finally:
            connection.close()
        self.send(200, triton + gate.metrics().encode(), [("Content-Type", "text/plain; charset=utf-8; version=0.0.4")])

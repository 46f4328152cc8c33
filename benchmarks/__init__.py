"""Benchmarks: latency across backends, fit time, and the paper's accuracy protocol."""
# ONNX Runtime's telemetry off before any harness imports it (the runtime's session module holds the opt-out)
from semobridge_runtime.backends import session as _session  # noqa: F401

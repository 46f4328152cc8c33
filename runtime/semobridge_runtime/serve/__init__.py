"""Serve an exported model on NVIDIA Triton Inference Server, and call it with the runtime's own API.

    semobridge-serve model.onnx                 # HTTP :8000, gRPC :8001, Prometheus metrics :8002

    from semobridge_runtime.serve import RemoteClassifier
    clf = RemoteClassifier("localhost:8001")    # instead of Classifier.load("model.onnx")
    result = clf.predict(image)                 # the same Prediction

The optional extra `semobridge-runtime[serve]` brings nvidia-pytriton (whose wheel ships the
`tritonserver` binary and its Python backend) and tritonclient; `import semobridge_runtime`
imports neither.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RemoteClassifier"]


def __getattr__(name: str) -> Any:  # the client imports tritonclient: only when asked for
    if name == "RemoteClassifier":
        from .client import RemoteClassifier

        return RemoteClassifier
    raise AttributeError(name)

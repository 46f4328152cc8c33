"""The Triton Python-backend model that semobridge-serve loads (one per instance, in Triton's stub process).

The model repository's `1/model.py` only imports `TritonPythonModel` from here. Requests that are
wrong get an INVALID_ARG error (HTTP 400, gRPC INVALID_ARGUMENT) each, alone; a failure of the
inference library gets INTERNAL (500) for the requests of that run. Triton counts such answers as
successes (the model ran), so each is counted on the metrics port as `semobridge_model_refused_total`.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import triton_python_backend_utils as pb_utils  # only inside Triton's Python-backend stub

from ..errors import InputError, SemobridgeError
from .execution import Request, run_batch
from .protocol import ENCODED, IMAGE, SETTINGS, error_text
from .settings import ServeSettings, load_classifier

DECODE_THREADS = min(8, os.cpu_count() or 1)
KINDS = ("input error", "model error", "runtime error", "internal error")


class TritonPythonModel:
    """Triton's Python-backend interface: initialize, execute (one dynamic batch), finalize."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        settings = ServeSettings.from_json(config["parameters"][SETTINGS]["string_value"])
        self._classifier = load_classifier(settings)
        self._budget = settings.max_request_bytes
        self._pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode")
        self._family = pb_utils.MetricFamily(
            name="semobridge_model_refused_total", kind=pb_utils.MetricFamily.COUNTER,
            description="Requests the model answered with an error, by kind (Triton counts them as successes)")
        self._refused = {kind: self._family.Metric(labels={"model": args["model_name"], "kind": kind}) for kind in KINDS}

    def execute(self, requests: list[Any]) -> list[Any]:
        inputs = [Request(_tensor(r, IMAGE), _tensor(r, ENCODED)) for r in requests]
        try:
            results = run_batch(self._classifier, inputs, self._pool, self._budget)
        except Exception as exc:  # a bug: answer every request instead of taking the instance down
            results = [exc] * len(requests)
        for result in results:
            if isinstance(result, Exception):
                self._refused.get(getattr(result, "kind", ""), self._refused["internal error"]).increment(1)
        return [_response(result, request) for result, request in zip(results, requests)]

    def finalize(self) -> None:
        self._pool.shutdown(wait=True)
        del self._refused, self._family  # the metrics before their family, as Triton asks


def _tensor(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _response(result: Any, request: Any) -> Any:
    if isinstance(result, Exception):
        code = pb_utils.TritonError.INVALID_ARG if isinstance(result, InputError) else pb_utils.TritonError.INTERNAL
        text = error_text(result) if isinstance(result, SemobridgeError) else f"internal error: {result!r}"
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(text, code))
    wanted = set(request.requested_output_names())
    return pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor(name, value) for name, value in result.items() if name in wanted])

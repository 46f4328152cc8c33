"""`RemoteClassifier`: `Classifier`'s predict/embed on a model that semobridge-serve (or Triton) serves.

    clf = Classifier.load("model.onnx")           # local
    clf = RemoteClassifier("localhost:8001")      # the same calls, on the server (gRPC; "http://host:8000": HTTP)

Images are checked and converted here exactly as `Classifier` does (same InputErrors), then sent as
uint8 batches of one size; the server answers with the same Prediction. Errors keep the runtime's
error model: what the server refuses (HTTP 4xx, gRPC INVALID_ARGUMENT) is an InputError with the
server's message and hint, a server or transport failure a BackendError.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from .. import openset
from ..classifier import Prediction, check_top_k
from ..errors import BackendError, InputError, SemobridgeError
from ..inputs import uint8_groups
from ..contract import DECISION_OUTPUTS, KNOWN, LABEL, OPEN_SET_SCORE, PROBABILITIES, RUN_OUTPUTS
from ..metadata import ModelInfo
from .protocol import ENCODED, IMAGE, METADATA, MODEL_NAME, error_from_text, parameter

T = TypeVar("T")
_REFUSED = {"400", "StatusCode.INVALID_ARGUMENT"}
_NOT_FOUND = {"404", "StatusCode.NOT_FOUND"}


class RemoteClassifier:
    """A model served by semobridge-serve (or by Triton from a `--formats triton` repository).

    url: "host:port" or "grpc://host:port" for gRPC (port 8001 by default on the server),
    "http://host:port" for HTTP/REST (8000). A gRPC RemoteClassifier may be shared by threads;
    use one HTTP RemoteClassifier per thread.
    """

    def __init__(self, url: str = "localhost:8001", model_name: str = MODEL_NAME, *, timeout_s: float = 60.0) -> None:
        scheme, _, address = url.rpartition("://")
        if scheme not in ("", "grpc", "http"):
            raise InputError(f"unsupported URL scheme {scheme!r} in {url!r}", hint="use host:port, grpc://host:port "
                                                                                   "or http://host:port")
        self._http = scheme == "http"
        self._url, self.model_name, self._timeout_s = url, model_name, timeout_s
        try:
            if self._http:
                import tritonclient.http as triton
            else:
                import tritonclient.grpc as triton
        except ImportError:
            raise BackendError("RemoteClassifier needs tritonclient", hint="pip install 'semobridge-runtime[serve]'"
                               ) from None
        self._triton = triton
        options = {"connection_timeout": timeout_s, "network_timeout": timeout_s} if self._http else {}
        self._client = self._call(lambda: triton.InferenceServerClient(address, **options))
        config = self._call(lambda: self._client.get_model_config(model_name, **({} if self._http else {"as_json": True})))
        config = config if self._http else config["config"]
        self.info = ModelInfo.from_dict(parameter(config, METADATA), f"model {model_name!r} at {url}")
        self.class_names: list[str] = list(self.info.class_names)
        served = {output.get("name") for output in config.get("output", [])}
        self._outputs = (*RUN_OUTPUTS, *(n for n in DECISION_OUTPUTS if n in served))  # the decision, if served
        # a server of a model exported before the graph decided: closed set, probabilities at the metadata's T
        self.temperature = self.info.open_set.decision.temperature if self.info.open_set is not None else 1.0
        self.limits = self.info.limits
        self.max_batch: int = int(config.get("max_batch_size", 0)) or 1

    def __repr__(self) -> str:
        return f"RemoteClassifier({self._url!r}, model={self.model_name!r}, classes={len(self.class_names)})"

    def __enter__(self) -> RemoteClassifier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def predict(self, images: Any, top_k: int = 5) -> Prediction:
        """As Classifier.predict: one HxWx3 uint8 array, an [N,H,W,3] batch, a list, paths or PIL images."""
        check_top_k(top_k)
        count, groups = uint8_groups(images, None, self.limits)
        return self._prediction(self._gather(count, [(g.indices, IMAGE, g.batch) for g in groups]), top_k)

    def predict_encoded(self, files: bytes | Sequence[bytes], top_k: int = 5) -> Prediction:
        """Classify encoded image files (JPEG, PNG, ... bytes), decoded on the server: less to send than pixels."""
        check_top_k(top_k)
        blobs = [files] if isinstance(files, bytes) else list(files)
        if not blobs or not all(isinstance(b, bytes) for b in blobs):
            raise InputError("predict_encoded takes bytes or a non-empty list of bytes (the contents of image files)")
        batch = np.array(blobs, dtype=object).reshape(-1, 1)
        return self._prediction(self._gather(len(blobs), [(np.arange(len(blobs)), ENCODED, batch)]), top_k)

    def _prediction(self, outputs: list[np.ndarray], top_k: int) -> Prediction:
        values = dict(zip(self._outputs, outputs))
        scores, labels, embeddings = (values[n] for n in RUN_OUTPUTS)
        if PROBABILITIES in values:
            probabilities, known = values[PROBABILITIES], values[KNOWN]
        else:
            _, known, probabilities = openset.decide(scores, self.temperature, None, labels)
        # a server of a graph exported before the chosen score decides on the top probability
        score = values[OPEN_SET_SCORE] if OPEN_SET_SCORE in values else openset.abstention_score(probabilities)
        return Prediction.of(scores, labels, embeddings, self.class_names, top_k, probabilities, known, score)

    def embed(self, images: Any) -> np.ndarray:
        """L2-normalised image embeddings, float32 [N, d]."""
        return self.predict(images, top_k=1).embeddings

    def _gather(self, count: int, groups: list[tuple[np.ndarray, str, np.ndarray]]) -> list[np.ndarray]:
        """Run every group in requests of at most max_batch images; outputs in the caller's order."""
        results: list[np.ndarray | None] = [None] * len(self._outputs)
        for indices, name, batch in groups:
            for start in range(0, len(batch), self.max_batch):
                values = self._infer(name, batch[start:start + self.max_batch])
                for j, value in enumerate(values):
                    if results[j] is None:
                        results[j] = np.empty((count, *value.shape[1:]), value.dtype)
                    results[j][indices[start:start + self.max_batch]] = value
        return results

    def _infer(self, name: str, batch: np.ndarray) -> list[np.ndarray]:
        triton = self._triton
        tensor = triton.InferInput(name, list(batch.shape), "UINT8" if name == IMAGE else "BYTES")
        tensor.set_data_from_numpy(batch)
        outputs = [triton.InferRequestedOutput(n) for n in self._outputs]
        timeout = {} if self._http else {"client_timeout": self._timeout_s}
        result = self._call(lambda: self._client.infer(self.model_name, [tensor], outputs=outputs, **timeout))
        values = [result.as_numpy(n) for n in self._outputs]
        return [v.reshape(len(batch)) if n in (LABEL, KNOWN, OPEN_SET_SCORE) else v for n, v in zip(self._outputs, values)]

    def _call(self, request: Callable[[], T]) -> T:
        """Run one client call; map what goes wrong onto the runtime's error model."""
        from tritonclient.utils import InferenceServerException

        try:
            return request()
        except InferenceServerException as exc:
            status, message = str(exc.status()), exc.message() or str(exc)
            if status in _REFUSED:
                raise error_from_text(message, InputError) from None
            if status in _NOT_FOUND:
                raise InputError(f"{self._url}: {error_from_text(message, InputError)}",
                                 hint=f"check the model name (semobridge-serve --model-name, default {MODEL_NAME})"
                                 ) from None
            raise self._unreachable(error_from_text(message, BackendError)) from None
        except SemobridgeError:
            raise
        except Exception as exc:  # sockets, gevent, grpc: the transport failed
            raise self._unreachable(BackendError(f"{type(exc).__name__}: {exc}")) from None

    def _unreachable(self, exc: SemobridgeError) -> SemobridgeError:
        if not isinstance(exc, BackendError):
            return exc
        return BackendError(f"{self._url}: {exc}", hint=exc.hint or "is semobridge-serve running and ready there? "
                            "(GET /v2/health/ready on its HTTP port)")

"""How every model instance of the server loads the model: one function, used by each instance and,
once before the server starts, by `semobridge-serve` itself (to fail early and publish the metadata)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ..classifier import Classifier

# After a model run on this many bytes of pixels (a 1600x1600 image) ONNX Runtime's arena gives back what it
# holds unused: it kept a 16-image 1024x1024 run's memory for good; freeing it after every run instead (no
# arena) cost 40% of the throughput of a mix of large images (benchmarks/serve_soak.py).
RELEASE_AFTER_BYTES = 8 << 20


@dataclass(frozen=True)
class ServeSettings:
    """The model file and the runtime's load options, carried to the instances in the model config."""

    model: str  # absolute path of the .onnx file
    threads: int | None = None  # ONNX Runtime intra-op threads per instance (None: one per core)
    # Off: spinning intra-op threads take the cores from Triton's network threads between runs (on our 2-core VM
    # the tiny model served 105 images/s with spinning, 165 without, at 16 clients).
    allow_spinning: bool = False
    # As Classifier.load: on the CPU, model_int8.onnx beside the model runs when its labels agree with fp32's.
    # Its activations are quantised per run, so a request's scores then move slightly with its batch.
    prefer_int8: bool = True
    max_side: int | None = None
    max_pixels: int | None = None
    max_aspect: float | None = None
    classes: str | None = None  # absolute path of a class file used instead of the fitted classes
    max_request_bytes: int | None = None  # pixels or encoded bytes a request may carry (--max-request-mb)
    unknown: str | float | None = "auto"  # Classifier.load's unknown (--unknown auto|off|VALUE)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


def load_classifier(settings: ServeSettings) -> Classifier:
    """The classifier one model instance runs."""
    return Classifier.load(settings.model, intra_op_num_threads=settings.threads,
                           allow_spinning=settings.allow_spinning, prefer_int8=settings.prefer_int8,
                           classes=settings.classes, max_side=settings.max_side,
                           max_pixels=settings.max_pixels, max_aspect=settings.max_aspect,
                           release_after_bytes=RELEASE_AFTER_BYTES, unknown=settings.unknown)

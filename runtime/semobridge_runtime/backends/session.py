"""Every ONNX Runtime session semobridge opens goes through `open_session`: the fused model, `model_int8.onnx`,
the enrolment text tower, and the export's reference sessions. One place decides the execution providers, the
intra-op threads and their spinning, the graph optimisation, the log level and the telemetry opt-out, so that
`--threads`, `--spin` and `providers=` apply to each of them alike (Immich-ML's sessions/ort.py idea).

The OpenVINO backend is not an ONNX Runtime session: it takes the same thread count (INFERENCE_NUM_THREADS) and
stops OpenVINO's telemetry itself (backends/openvino.py); the TensorRT backend runs engines (backends/trt.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from os import PathLike
from typing import Any, Sequence, Union

# ONNX Runtime (1.29+ on Linux/macOS) writes a device id and an event cache under
# ~/.cache/Microsoft/DeveloperTools and uploads usage events, from the moment it initialises
# (`import onnxruntime`); only this variable, set before that, stops it. An explicit value wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # noqa: E402  (after the telemetry opt-out)

from ..errors import BackendError, InputError, ModelError  # noqa: E402
from ..limits import check_threads  # noqa: E402

ort.disable_telemetry_events()  # also stops events when the app initialised ONNX Runtime before us

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
CPU = ("CPUExecutionProvider",)
SPINNING = "session.intra_op.allow_spinning"  # ONNX Runtime's session config key
Provider = Union[str, tuple[str, dict[str, Any]]]  # a name, or ONNX Runtime's (name, provider options)


@dataclass(frozen=True)
class SessionSettings:
    """How a session runs: Classifier.load's `providers`, `intra_op_num_threads` and `allow_spinning`.

    providers: None: TensorRT, CUDA, CPU as this ONNX Runtime build has them; else exactly these (checked), each
        a name or a (name, options) pair as InferenceSession takes them.
    intra_op_num_threads: 0..256; None or 0: ONNX Runtime's default, one per core.
    allow_spinning: the intra-op threads spin between calls (lowest latency) or sleep (leave the cores to others).
    """

    providers: tuple[Provider, ...] | None = None
    intra_op_num_threads: int | None = None
    allow_spinning: bool = True

    def __post_init__(self) -> None:
        if self.providers is not None:
            if isinstance(self.providers, str):
                raise InputError(f"providers must be a list of execution provider names, not {self.providers!r}",
                                 hint='e.g. providers=["CPUExecutionProvider"]')
            object.__setattr__(self, "providers", tuple(self.providers))
        if self.intra_op_num_threads is not None:
            check_threads(self.intra_op_num_threads, "intra_op_num_threads")

    def beside(self, providers: Sequence[str]) -> SessionSettings:
        """These settings for a session that runs beside a model using `providers` (the text tower): the same
        providers where this ONNX Runtime build has them (an OpenVINO or TensorRT-engine model names none of
        its), else the CPU."""
        available = ort.get_available_providers()
        return replace(self, providers=tuple(p for p in providers if _name(p) in available) or CPU)


def choose_providers(requested: Sequence[Provider] | None) -> list[Provider]:
    """TensorRT, then CUDA, then CPU among those available; or check the caller's explicit list."""
    available = ort.get_available_providers()
    if requested is None:
        return [p for p in PREFERRED_PROVIDERS if p in available]
    missing = [_name(p) for p in requested if _name(p) not in available]
    if missing:
        raise BackendError(f"execution providers {missing} are not available in this onnxruntime build "
                           f"(available: {available})", hint="install onnxruntime-gpu for CUDA/TensorRT")
    return list(requested)


def session_options(settings: SessionSettings) -> ort.SessionOptions:
    """The SessionOptions of every semobridge session."""
    options = ort.SessionOptions()
    if settings.intra_op_num_threads is not None:
        options.intra_op_num_threads = settings.intra_op_num_threads
    options.add_session_config_entry(SPINNING, "1" if settings.allow_spinning else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # not the warning that the class-set inputs (by design) have defaults
    return options


def open_session(model: str | PathLike | bytes, settings: SessionSettings = SessionSettings(),
                 what: str = "model") -> ort.InferenceSession:
    """An InferenceSession of `model` (a path, or a serialised graph) with `settings`; a file ONNX Runtime cannot
    load is a ModelError that names it (`what`: which file, for the message)."""
    providers = choose_providers(settings.providers)
    source = model if isinstance(model, bytes) else os.fspath(model)
    try:
        return ort.InferenceSession(source, sess_options=session_options(settings), providers=providers)
    except Exception as exc:  # ORT raises several unrelated types for unreadable files
        name = "the serialised graph" if isinstance(model, bytes) else os.fspath(model)
        raise ModelError(f"ONNX Runtime cannot load the {what} {name} ({exc}); the file is truncated, corrupt or "
                         "not ONNX: re-export or re-download it") from exc


def _name(provider: Provider) -> str:
    return provider if isinstance(provider, str) else provider[0]

"""Triton's `config.pbtxt` (its ModelConfig in protobuf text format) of a semobridge model: one builder for
semobridge-serve's Python-backend model (serve/repository.py) and for `semobridge-export --formats triton`'s
ONNX Runtime and TensorRT-plan models (export/triton.py).

Both publish the same outputs (`scores` with `labels.txt`, `label` [1], `embedding`, and the open-set decision's
`probabilities`, `known` [1] and `open_set_score` [1]), the same batching and
instance text for the same `Batching`, and the same metadata parameters, so RemoteClassifier reads either
server alike. What differs is what runs the model: semobridge-serve's Python backend also takes `encoded` files
and returns `class_name`, on CPU instances (the Classifier picks its own execution providers inside); the
export's graph takes only `image`, on KIND_AUTO instances (one per GPU, else one on the CPU).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping, Sequence

from ..contract import EMBEDDING, KNOWN, LABEL, OPEN_SET_SCORE, PROBABILITIES, SCORES
from ..metadata import ModelInfo
from .protocol import LABELS_FILE, METADATA


@dataclass(frozen=True)
class Batching:
    """Triton's scheduling of the model: dynamic batching and parallel instances."""

    max_batch: int = 32  # images per model run (and per request); 1: no dynamic batching
    max_queue_delay_us: int = 0  # how long a request may wait for others to fill a batch
    instances: int = 1  # model instances (semobridge-serve: each a process with its own ONNX Runtime session)


@dataclass(frozen=True)
class TensorConfig:
    """One input or output: its name, Triton data type, dims without the batch dimension (-1: any), and
    `extra`, the fields that follow them (optional, label_filename, reshape)."""

    name: str
    data_type: str
    dims: Sequence[int]
    extra: str = ""

    def text(self) -> str:
        fields = [f"name: {text_literal(self.name)}", f"data_type: {self.data_type}",
                  f"dims: [ {', '.join(map(str, self.dims))} ]", *([self.extra] if self.extra else [])]
        return f"{{ {' '.join(fields)} }}"


def model_outputs(num_classes: int, embedding_dim: int, label_reshaped: bool) -> list[TensorConfig]:
    """`scores` [C] (with labels.txt, for Triton's classification extension), `label` [1], `embedding` [d], and the
    open-set decision: `probabilities` [C], `known` [1] and `open_set_score` [1], the model's chosen abstention score
    that `known` thresholds (semobridge-serve's label is -1 for unknown; the graph's, in the export's repository, is
    the argmax beside `known`).
    label_reshaped: the model's label, known and open_set_score are [N] (the fused graph's), which Triton shows as
    [N, 1]."""
    reshape = 'reshape: { shape: [ ] }' if label_reshaped else ""
    return [TensorConfig(SCORES, "TYPE_FP32", [num_classes], f"label_filename: {text_literal(LABELS_FILE)}"),
            TensorConfig(LABEL, "TYPE_INT64", [1], reshape),
            TensorConfig(EMBEDDING, "TYPE_FP32", [embedding_dim]),
            TensorConfig(PROBABILITIES, "TYPE_FP32", [num_classes]),
            TensorConfig(KNOWN, "TYPE_BOOL", [1], reshape),
            TensorConfig(OPEN_SET_SCORE, "TYPE_FP32", [1], reshape)]


def metadata_parameters(meta: ModelInfo) -> dict[str, str]:
    """The parameters every semobridge config publishes: the metadata JSON and, for a glance, its headline fields."""
    return {METADATA: meta.to_json(), "class_names": json.dumps(list(meta.class_names)),
            "backbone": json.dumps(meta.backbone.name if meta.backbone is not None else None),
            "shots": json.dumps(meta.shots), "library_version": json.dumps(meta.library_version)}


def config_text(name: str, runtime: tuple[str, str], inputs: Sequence[TensorConfig], outputs: Sequence[TensorConfig],
                batching: Batching, instance_kind: str, parameters: Mapping[str, str],
                optimization: Sequence[str] = ()) -> str:
    """config.pbtxt. runtime: ("backend", "python") or ("platform", "onnxruntime_onnx" / "tensorrt_plan");
    instance_kind: KIND_CPU, KIND_GPU or KIND_AUTO; optimization: lines of an `optimization { }` block."""
    field, value = runtime
    lines = [f"name: {text_literal(name)}", f"{field}: {text_literal(value)}", f"max_batch_size: {batching.max_batch}",
             "input [", *_listed(inputs), "]", "output [", *_listed(outputs), "]",
             f"instance_group [ {{ count: {batching.instances} kind: {instance_kind} }} ]"]
    if batching.max_batch > 1:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {batching.max_queue_delay_us} }}")
    lines += optimization
    lines += [f"parameters {{ key: {text_literal(key)} value: {{ string_value: {text_literal(value)} }} }}"
              for key, value in parameters.items()]
    return "\n".join(lines) + "\n"


def text_literal(value: str) -> str:
    """A protobuf text-format string literal (JSON's escapes are a subset of its C escapes)."""
    return json.dumps(value, ensure_ascii=False)


def _listed(tensors: Sequence[TensorConfig]) -> list[str]:
    return [f"  {t.text()}{',' if i < len(tensors) - 1 else ''}" for i, t in enumerate(tensors)]

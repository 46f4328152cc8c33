"""The model repository semobridge-serve hands to Triton: `<name>/config.pbtxt`, `<name>/labels.txt`,
`<name>/1/model.py` (which imports `semobridge_runtime.serve.model`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from .. import __version__
from ..classifier import Classifier
from ..files import file_sha256
from .protocol import ENCODED, IMAGE, LABELS_FILE, METADATA, SETTINGS
from .settings import ServeSettings

CLASSES_FILE = "served.classes"  # the class set served, beside config.pbtxt
MODEL_PY = "from semobridge_runtime.serve.model import TritonPythonModel  # noqa: F401  (semobridge-serve)\n"


@dataclass(frozen=True)
class Batching:
    """Triton's scheduling of the model: dynamic batching and parallel instances."""

    max_batch: int = 32  # images per model run (and per request); 1: no dynamic batching
    max_queue_delay_us: int = 0  # how long a request may wait for others to fill a batch
    instances: int = 1  # model instances, each a process with its own ONNX Runtime session


def model_parameters(classifier: Classifier, settings: ServeSettings) -> dict[str, str]:
    """What the config's `parameters` publish: the metadata (the classes and limits in force) and the identity
    of the model and of its class file."""
    meta = replace(classifier.info, class_names=tuple(classifier.class_names), limits=classifier.limits)
    return {
        METADATA: meta.to_json(),
        "class_names": json.dumps(list(meta.class_names)),
        "backbone": json.dumps(meta.backbone.name if meta.backbone is not None else None),
        "shots": json.dumps(meta.shots),
        "library_version": json.dumps(meta.library_version),
        "runtime_version": json.dumps(__version__),
        # the file that runs (model_int8.onnx if chosen), and the class set served (None: the fitted one)
        "model_sha256": json.dumps(file_sha256(classifier.path, "model")),
        "classes_sha256": json.dumps(file_sha256(settings.classes, "class file") if settings.classes else None),
        SETTINGS: settings.to_json(),
    }


def config_text(name: str, classifier: Classifier, settings: ServeSettings, batching: Batching) -> str:
    """config.pbtxt of the served model (Triton's ModelConfig in protobuf text format)."""
    h, w = classifier.fixed_size or (-1, -1)
    lines = [
        f'name: "{name}"',
        'backend: "python"',
        f"max_batch_size: {batching.max_batch}",
        "input [",
        f'  {{ name: "{IMAGE}" data_type: TYPE_UINT8 dims: [ {h}, {w}, 3 ] optional: true allow_ragged_batch: true }},',
        f'  {{ name: "{ENCODED}" data_type: TYPE_STRING dims: [ 1 ] optional: true allow_ragged_batch: true }}',
        "]",
        "output [",
        f'  {{ name: "scores" data_type: TYPE_FP32 dims: [ {len(classifier.class_names)} ] label_filename: "{LABELS_FILE}" }},',
        '  { name: "label" data_type: TYPE_INT64 dims: [ 1 ] },',
        f'  {{ name: "embedding" data_type: TYPE_FP32 dims: [ {classifier.info.embedding_dim} ] }},',
        '  { name: "class_name" data_type: TYPE_STRING dims: [ 1 ] }',
        "]",
        f"instance_group [ {{ count: {batching.instances} kind: KIND_CPU }} ]",
    ]
    if batching.max_batch > 1:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {batching.max_queue_delay_us} }}")
    lines += [f"parameters {{ key: {_text(key)} value: {{ string_value: {_text(value)} }} }}"
              for key, value in model_parameters(classifier, settings).items()]
    return "\n".join(lines) + "\n"


def write_repository(root: Path, name: str, classifier: Classifier, settings: ServeSettings,
                     batching: Batching) -> Path:
    """Write the repository under `root` (a fresh folder) and return it.

    With a class file, the class set `classifier` uses is written into the repository, and every instance
    loads that copy: they serve what the config publishes even if the user's file changes meanwhile.
    """
    folder = root / name
    (folder / "1").mkdir(parents=True)
    if settings.classes is not None:
        classifier.save_classes(folder / CLASSES_FILE)
        settings = replace(settings, classes=str(folder / CLASSES_FILE))
    (folder / "config.pbtxt").write_text(config_text(name, classifier, settings, batching), encoding="utf-8")
    (folder / LABELS_FILE).write_text("".join(f"{n}\n" for n in classifier.class_names), encoding="utf-8")
    (folder / "1" / "model.py").write_text(MODEL_PY, encoding="utf-8")
    return root


def _text(value: str) -> str:
    """A protobuf text-format string literal (JSON's escapes are a subset of its C escapes)."""
    return json.dumps(value, ensure_ascii=False)

"""The model repository semobridge-serve hands to Triton: `<name>/config.pbtxt`, `<name>/labels.txt`,
`<name>/1/model.py` (which imports `semobridge_runtime.serve.model`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .. import __version__
from ..classifier import Classifier
from ..files import file_sha256
from .protocol import ENCODED, IMAGE, LABELS_FILE, SETTINGS
from .settings import ServeSettings
from .triton_config import Batching, TensorConfig, config_text as model_config_text, metadata_parameters, model_outputs

CLASSES_FILE = "served.classes"  # the class set served, beside config.pbtxt
MODEL_PY = "from semobridge_runtime.serve.model import TritonPythonModel  # noqa: F401  (semobridge-serve)\n"


def model_parameters(classifier: Classifier, settings: ServeSettings) -> dict[str, str]:
    """What the config's `parameters` publish: the metadata (the classes, limits and precision in force: OpenVINO's
    where the runtime chose it) and the identity of the model and of its class file."""
    meta = replace(classifier.info, class_names=tuple(classifier.class_names), limits=classifier.limits,
                   precision=classifier.precision)
    return {
        **metadata_parameters(meta),
        "runtime_version": json.dumps(__version__),
        # the file that runs (model_int8.onnx if chosen), and the class set served (None: the fitted one)
        "model_sha256": json.dumps(file_sha256(classifier.path, "model")),
        "classes_sha256": json.dumps(file_sha256(settings.classes, "class file") if settings.classes else None),
        SETTINGS: settings.to_json(),
    }


def config_text(name: str, classifier: Classifier, settings: ServeSettings, batching: Batching) -> str:
    """config.pbtxt of the served model (triton_config.py: the builder `--formats triton` shares)."""
    h, w = classifier.fixed_size or (-1, -1)
    inputs = [TensorConfig(IMAGE, "TYPE_UINT8", [h, w, 3], "optional: true allow_ragged_batch: true"),
              TensorConfig(ENCODED, "TYPE_STRING", [1], "optional: true allow_ragged_batch: true")]
    outputs = [*model_outputs(len(classifier.class_names), classifier.info.embedding_dim, label_reshaped=False),
               TensorConfig("class_name", "TYPE_STRING", [1])]
    return model_config_text(name, ("backend", "python"), inputs, outputs, batching, "KIND_CPU",
                             model_parameters(classifier, settings))


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

"""semobridge-serve --classes FILE: a class set edited on the device is what the server runs and publishes, equal
to the in-process runtime with the same file; a class file it cannot use stops it before Triton starts."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from semobridge_runtime import Classifier, ModelError
from semobridge_runtime.classes import Identity
from semobridge_runtime.serve import RemoteClassifier

from .conftest import SERVE, start_server
from .test_serve import http_json, image_request

TOL = 1e-6


@pytest.fixture(scope="module")
def class_file(serve_model: Path, photos: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fitted classes with the first removed, the second renamed and two enrolled from two photos each."""
    classifier = Classifier.load(serve_model)
    first, second = classifier.class_names[:2]
    classifier.remove_class(first)
    classifier.rename_class(second, "renamed whale")
    for name, shots in (("purple mug", photos[:2]), ("green kettle", photos[2:4])):  # the tiny fit has no templates
        classifier.add_class(name, shots, prompts=[f"a photo of a {name}."])
    path = tmp_path_factory.mktemp("classes") / "shop.classes"
    classifier.save_classes(path)
    return path


def test_the_server_runs_and_publishes_the_class_file(serve_model, class_file, photos, tmp_path) -> None:
    fitted = Classifier.load(serve_model).class_names
    reference = Classifier.load(serve_model, classes=class_file)  # the in-process runtime with the same file
    expected_names = ["renamed whale", *fitted[2:], "purple mug", "green kettle"]  # one class more than fitted
    assert reference.class_names == expected_names
    served = start_server(serve_model, tmp_path, "--classes", str(class_file), "--max-batch", "8")
    try:
        assert f"({len(expected_names)} classes)" in served.stdout[-1]
        for url in (served.grpc, served.http):
            with RemoteClassifier(url) as remote:
                assert remote.class_names == expected_names and remote.info.num_classes == len(expected_names)
                got, want = remote.predict(photos, top_k=3), reference.predict(photos, top_k=3)
                assert got.scores.shape == (len(photos), len(expected_names))
                assert np.abs(got.scores - want.scores).max() <= TOL
                assert np.abs(got.embeddings - want.embeddings).max() <= TOL
                np.testing.assert_array_equal(got.labels, want.labels)
                assert got.class_names == want.class_names and got.top_k.names == want.top_k.names
        status, answer = http_json(f"{served.http}/v2/models/semobridge/infer", image_request(
            photos[5], outputs=[{"name": "class_name"}, {"name": "scores", "parameters": {"classification": 3}}]))
        assert status == 200, answer
        out = {o["name"]: o["data"] for o in answer["outputs"]}
        want = reference.predict(photos[5], top_k=3)
        assert out["class_name"] == want.class_names  # labels.txt holds the file's classes too
        assert [entry.split(":", 2)[2] for entry in out["scores"]] == want.top_k.names[0]
        status, config = http_json(f"{served.http}/v2/models/semobridge/config")
        assert status == 200 and config["output"][0]["dims"] == [len(expected_names)]
        parameters = {key: json.loads(value["string_value"]) for key, value in config["parameters"].items()}
        assert parameters["class_names"] == parameters["semobridge"]["class_names"] == expected_names
        assert parameters["classes_sha256"] == hashlib.sha256(class_file.read_bytes()).hexdigest()
    finally:
        assert served.stop() == 0, served.stderr()


def test_a_class_file_it_cannot_use_stops_it_before_start(serve_model, class_file, tmp_path) -> None:
    foreign = tmp_path / "foreign.classes"  # the same classes, saved for another backbone
    reference = Classifier.load(serve_model, classes=class_file)
    reference.classes.save(foreign, Identity("another-backbone", "0" * 16, "0" * 16, reference.info.embedding_dim))
    cases = [(tmp_path / "missing.classes", "cannot read class file"),
             (serve_model.with_name("model.json"), "is truncated or not a safetensors file"),
             (serve_model.with_name("head.safetensors"), "is not a semobridge class file"),  # safetensors, not classes
             (foreign, "was made for the backbone 'another-backbone'")]
    for path, words in cases:
        done = subprocess.run([*SERVE, str(serve_model), "--classes", str(path), "--address", "127.0.0.1"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == ModelError.exit_code == 3, done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr and "starting Triton" not in done.stderr
        assert done.stderr.startswith("semobridge-serve: error: class file ") or done.stderr.startswith(
            "semobridge-serve: error: cannot read class file ")

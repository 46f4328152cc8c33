"""TensorRT engine backend. Its inference tests need TensorRT 10, cuda-python and a GPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from semobridge_runtime import BackendError, Classifier

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed; this checks the error without it")
def test_engine_without_tensorrt_says_how_to_install(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00" * 16)
    with pytest.raises(BackendError, match="needs TensorRT 10") as info:  # the machine lacks a library
        Classifier.load(engine)
    assert "semobridge-runtime[tensorrt]" in info.value.hint


@pytest.mark.skipif(not HAVE_TENSORRT, reason="TensorRT is not installed: the TensorRT backend is unverified")
def test_engine_matches_onnxruntime(onnx_model: Path, tmp_path: Path, images: list[np.ndarray]) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_model.read_bytes()), parser.get_error(0)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 4, 4, 3), (2, 64, 64, 3), (4, 128, 128, 3))
    config.add_optimization_profile(profile)
    engine = tmp_path / "model.engine"
    engine.write_bytes(builder.build_serialized_network(network, config))
    (tmp_path / "model.json").write_text(Classifier.load(onnx_model).info.to_json())

    trt_result = Classifier.load(engine).predict(images)
    ort_result = Classifier.load(onnx_model).predict(images)
    np.testing.assert_array_equal(trt_result.labels, ort_result.labels)
    np.testing.assert_allclose(trt_result.scores, ort_result.scores, atol=1e-3)

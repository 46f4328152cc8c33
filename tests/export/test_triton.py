"""`--formats triton`: a model repository for the official Triton container, checked against Triton's
model-config schema and the graph it serves. The container itself cannot run here (no Docker engine,
no GPU): what the ONNX Runtime and TensorRT backends do with these configs is unverified."""
from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import json_format, text_format
from semobridge_runtime.metadata import ModelInfo

from semobridge_export.formats import resolve_formats, unused_options
from semobridge_export.tensorrt import Profile
from semobridge_export.triton import MODEL_NAME, config_text, write_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient ships Triton's schema")


def parse(path: Path):
    """The config as Triton reads it: protobuf text format into inference.ModelConfig (unknown fields fail)."""
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def graph_dims(onnx_path: Path) -> dict[str, list]:
    graph = onnx.load(onnx_path, load_external_data=False).graph
    return {v.name: [d.dim_value or None for d in v.type.tensor_type.shape.dim] for v in [*graph.input, *graph.output]}


@pytest.fixture(scope="module")
def repository(exported_onnx: Path, tmp_path_factory) -> Path:
    meta = ModelInfo.from_json((exported_onnx / "model.json").read_text(), "model.json")
    engine = tmp_path_factory.mktemp("engine") / "model_trt.engine"
    engine.write_bytes(b"stands in for a TensorRT engine")  # only copied, never opened
    return write_repository(tmp_path_factory.mktemp("triton") / "triton", exported_onnx / "model.onnx", meta,
                            Profile(), engine)


def test_the_onnx_runtime_config_follows_the_schema_and_the_graph(repository, exported_onnx) -> None:
    meta = json.loads((exported_onnx / "model.json").read_text())
    folder = repository / MODEL_NAME
    config = parse(folder / "config.pbtxt")
    assert config.name == MODEL_NAME and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == Profile().batch[2] and config.HasField("dynamic_batching")
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, model_config_pb2.ModelInstanceGroup.KIND_AUTO)]
    dims = graph_dims(folder / "1" / "model.onnx")
    (image,) = config.input
    assert image.name == "image" and image.data_type == model_config_pb2.TYPE_UINT8
    assert [d if d > 0 else None for d in image.dims] == dims["image"][1:]  # the batch dimension is Triton's
    outputs = {o.name: o for o in config.output}
    # the graph's class count is dynamic (the class set is an input, with the fitted classes as its default);
    # Triton feeds only `image`, so the config fixes it to the fitted count
    assert dims["scores"][1:] == [None] and list(outputs["scores"].dims) == [meta["num_classes"]]
    assert list(outputs["embedding"].dims) == dims["embedding"][1:] == [meta["embedding_dim"]]
    assert dims["label"] == [None] and list(outputs["label"].dims) == [1] and list(outputs["label"].reshape.shape) == []
    assert (folder / outputs["scores"].label_filename).read_text().splitlines() == meta["class_names"]
    (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert trt.parameters["trt_profile_min_shapes"] == "image:1x32x32x3"
    assert trt.parameters["trt_profile_max_shapes"] == "image:16x1080x1920x3"
    assert json.loads(config.parameters["semobridge"].string_value) == meta


def test_the_served_graph_has_the_fitted_classes_as_constants(repository, exported_onnx) -> None:
    """Triton feeds only `image`: the repository's graph is the export's with the class-set defaults as weights,
    and gives the export's scores exactly."""
    import onnxruntime as ort

    served = onnx.load(repository / MODEL_NAME / "1" / "model.onnx")
    assert [i.name for i in served.graph.input] == ["image"]
    assert {"text_classifier", "bridged_prototypes", "image_prototypes", "class_kl"} <= {t.name for t in served.graph.initializer}
    images = np.random.default_rng(5).integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)
    ours, theirs = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                    for p in (exported_onnx / "model.onnx", repository / MODEL_NAME / "1" / "model.onnx"))
    assert [i.name for i in theirs.get_inputs()] == ["image"] and not theirs.get_overridable_initializers()
    for want, got in zip(ours.run(["scores", "embedding"], {"image": images}), theirs.run(["scores", "embedding"], {"image": images})):
        np.testing.assert_array_equal(got, want)


def test_with_an_engine_the_plan_is_built_with_the_classes_inside(exported_onnx, tmp_path, monkeypatch) -> None:
    """TensorRT is not installed here: what the triton format asks the builder for (the classes built in, the
    export's profile) is checked; tests/export/test_tensorrt.py checks that request's shapes."""
    from semobridge_export import formats, tensorrt

    asked = {}

    def build(onnx_path, engine_path, profile, **options):
        asked.update(onnx=onnx_path, profile=profile, **options)
        engine_path.parent.mkdir(parents=True)
        engine_path.write_bytes(b"a plan")
        return engine_path

    monkeypatch.setattr(tensorrt, "build_engine", build)  # export_triton imports it when it runs
    meta = ModelInfo.from_json((exported_onnx / "model.json").read_text(), "model.json")
    job = formats.Job(None, meta, tmp_path, profile=Profile((1, 2, 8)), log=lambda _: None,
                      written={"onnx": exported_onnx / "model.onnx", "engine": tmp_path / "model_trt.engine"})
    root = formats.export_triton(job)
    assert asked["class_inputs"] is False and asked["onnx"] == exported_onnx / "model.onnx"
    assert asked["profile"] == Profile((1, 2, 8)) and asked["fp16"] is True
    assert (root / f"{MODEL_NAME}_trt" / "1" / "model.plan").read_bytes() == b"a plan"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["triton"]  # the built plan's staging folder is gone


def test_the_tensorrt_plan_variant(repository) -> None:
    config = parse(repository / f"{MODEL_NAME}_trt" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 16
    assert not config.HasField("optimization")  # the plan is TensorRT already
    assert (repository / f"{MODEL_NAME}_trt" / "1" / "model.plan").read_bytes() == b"stands in for a TensorRT engine"


def test_remote_classifier_reads_the_export_config_as_it_reads_semobridge_serve(repository) -> None:
    from semobridge_runtime.serve.protocol import METADATA, parameter

    config = json_format.MessageToDict(parse(repository / MODEL_NAME / "config.pbtxt"), preserving_proto_field_name=True)
    assert parameter(config, METADATA)["class_names"] == json.loads(config["parameters"]["class_names"]["string_value"])


def test_semobridge_serve_and_the_export_build_the_same_config(exported_onnx) -> None:
    """One builder (semobridge_runtime/serve/triton_config.py): for the same model and batching, the config of
    semobridge-serve's Python-backend model and the export's ONNX Runtime model differ only where what runs the
    model differs (backend vs platform, the `encoded` input and `class_name` output the Python backend adds, the
    graph's [N] label and known reshaped, CPU vs AUTO instances, the TensorRT accelerator, serve's identity parameters)."""
    from semobridge_runtime import Classifier
    from semobridge_runtime.serve.repository import config_text as served_config
    from semobridge_runtime.serve.settings import ServeSettings, load_classifier
    from semobridge_runtime.serve.triton_config import Batching

    meta = ModelInfo.from_json((exported_onnx / "model.json").read_text(), "model.json")
    settings = ServeSettings(str(exported_onnx / "model.onnx"), prefer_int8=False)
    clf = load_classifier(settings)
    assert isinstance(clf, Classifier) and clf.path.name == "model.onnx"
    served, exported = (text_format.Parse(text, model_config_pb2.ModelConfig()) for text in (
        served_config(MODEL_NAME, clf, settings, Batching(max_batch=12)), config_text(meta, Profile((1, 4, 12)))))
    assert (served.backend, exported.platform) == ("python", "onnxruntime_onnx")
    served.ClearField("backend"), exported.ClearField("platform")
    assert exported.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"
    exported.ClearField("optimization")
    assert [i.name for i in served.input] == ["image", "encoded"] and served.input[0].optional
    del served.input[1]
    served.input[0].ClearField("optional"), served.input[0].ClearField("allow_ragged_batch")
    assert served.output[-1].name == "class_name"
    del served.output[-1]
    reshaped = [o.name for o in exported.output if o.HasField("reshape")]
    assert reshaped == ["label", "known", "open_set_score"]  # the graph's [N] outputs
    for output in exported.output:
        output.ClearField("reshape")
    kind = model_config_pb2.ModelInstanceGroup
    assert (served.instance_group[0].kind, exported.instance_group[0].kind) == (kind.KIND_CPU, kind.KIND_AUTO)
    served.instance_group[0].ClearField("kind"), exported.instance_group[0].ClearField("kind")
    for key in ("runtime_version", "model_sha256", "classes_sha256", "semobridge_serve"):
        del served.parameters[key]
    served_meta, exported_meta = (json.loads(c.parameters["semobridge"].string_value) for c in (served, exported))
    served_meta.pop("limits"), exported_meta.pop("limits", None)  # serve publishes the limits in force
    assert served_meta == exported_meta
    del served.parameters["semobridge"], exported.parameters["semobridge"]
    assert served == exported
    assert exported.max_batch_size == 12 and exported.HasField("dynamic_batching") and len(exported.output) == 6


@pytest.mark.parametrize("shape, kind", [(["N", 240, 320, 3], "uint8"), (["N", 3, 224, 224], "float")])
def test_fixed_size_and_float_inputs(exported_onnx, shape, kind) -> None:
    meta = ModelInfo.from_json((exported_onnx / "model.json").read_text(), "model.json")
    meta = dataclasses.replace(meta, input=dataclasses.replace(meta.input, kind=kind, shape=tuple(shape)))
    config = text_format.Parse(config_text(meta, Profile((1, 4, 8))), model_config_pb2.ModelConfig())
    assert list(config.input[0].dims) == shape[1:] and config.max_batch_size == 8
    assert config.input[0].data_type == (model_config_pb2.TYPE_UINT8 if kind == "uint8" else model_config_pb2.TYPE_FP32)
    assert config.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters[
        "trt_profile_opt_shapes"] == "image:4x" + "x".join(map(str, shape[1:]))


def test_tritonserver_parses_it_and_only_lacks_the_backends(repository, tmp_path) -> None:
    """PyTriton's tritonserver reads the configs with Triton's own parser; it has no ONNX Runtime or TensorRT
    backend, so loading stops exactly there (a config error would stop it earlier, with another message)."""
    from semobridge_runtime.serve.server import Distribution, python_library_dir
    from benchmarks.common import free_ports

    try:
        dist = Distribution.find()
    except Exception as exc:
        pytest.skip(f"needs the serve extra's tritonserver: {exc}")
    http, grpc, metrics = free_ports(3)
    done = subprocess.run([str(dist.tritonserver), f"--model-repository={repository}", f"--backend-directory={tmp_path}",
                           f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
                           "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
                           "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0", "--exit-timeout-secs=1"],
                          env={"LD_LIBRARY_PATH": f"{python_library_dir()}:{dist.libraries}"},
                          capture_output=True, text=True, timeout=120)
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "Error parsing text-format" not in said
    assert "unable to find backend library for backend 'onnxruntime'" in said
    assert "unable to find backend library for backend 'tensorrt'" in said


def test_the_format_row_and_the_exported_folder(exported_onnx: Path) -> None:
    """The session's export has --formats triton (tests/export/test_export_hardening.py checks that a plain export
    replaces it as a whole)."""
    assert resolve_formats("triton") == ["onnx", "triton"]  # the graph it serves comes first
    assert unused_options(["onnx", "triton"], ["--batch", "--sizes", "--fixed-size"]) == []
    manifest = json.loads((exported_onnx / "manifest.json").read_text())["files"]
    assert {f"triton/{MODEL_NAME}/config.pbtxt", f"triton/{MODEL_NAME}/labels.txt",
            f"triton/{MODEL_NAME}/1/model.onnx"} <= set(manifest)
    parse(exported_onnx / "triton" / MODEL_NAME / "config.pbtxt")

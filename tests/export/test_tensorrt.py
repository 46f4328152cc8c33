"""TensorRT: what can be checked without TensorRT (profiles, cache keys, trtexec), the rest skipped."""
from __future__ import annotations

import importlib.util

import pytest
from semobridge_runtime.metadata import InputSpec, ModelInfo

from semobridge_export.metadata import read_metadata
from semobridge_export.tensorrt import (
    Profile, TensorRTError, build_engine, cache_key, check_dla_core, class_set_graph, fp32_layer_names, gpu_name,
    tensorrt_graph, trtexec_command,
)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


def _meta(kind: str, shape: tuple) -> ModelInfo:
    return ModelInfo(class_names=("a",), embedding_dim=8, image_size=224, input=InputSpec(kind=kind, shape=shape))


META_DYNAMIC = _meta("uint8", ("N", "H", "W", 3))
META_FIXED = _meta("uint8", ("N", 480, 640, 3))
META_FLOAT = _meta("float", ("N", 3, 224, 224))


def test_profile_shapes():
    p = Profile(batch=(1, 4, 32), sizes=((64, 64), (480, 640), (1080, 1920)))
    assert p.shapes(META_DYNAMIC) == ((1, 64, 64, 3), (4, 480, 640, 3), (32, 1080, 1920, 3))
    assert p.shapes(META_FIXED) == ((1, 480, 640, 3), (4, 480, 640, 3), (32, 480, 640, 3))
    assert p.shapes(META_FLOAT) == ((1, 3, 224, 224), (4, 3, 224, 224), (32, 3, 224, 224))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        Profile(batch=(4, 1, 8)).shapes(META_DYNAMIC)
    with pytest.raises(ValueError, match="grow"):
        Profile(sizes=((640, 640), (480, 640), (1080, 1920))).shapes(META_DYNAMIC)


def test_cache_key_changes_with_gpu_version_onnx_profile_and_precision():
    shapes = Profile().shapes(META_DYNAMIC)
    base = cache_key("abc", "Orin", "10.3.0", shapes, True)
    assert base == cache_key("abc", "Orin", "10.3.0", shapes, True)
    others = [
        cache_key("abd", "Orin", "10.3.0", shapes, True),
        cache_key("abc", "NVIDIA H100", "10.3.0", shapes, True),
        cache_key("abc", "Orin", "10.4.0", shapes, True),
        cache_key("abc", "Orin", "10.3.0", Profile(batch=(1, 2, 16)).shapes(META_DYNAMIC), True),
        cache_key("abc", "Orin", "10.3.0", shapes, False),
    ]
    assert len({base, *others}) == 6


def test_trtexec_command(exported_onnx, tmp_path):
    onnx_path = exported_onnx / "model.onnx"
    pins = fp32_layer_names(tensorrt_graph(onnx_path))
    assert pins and any("layer_norm" in n for n in pins) and "image_to_float" in pins  # the image's Cast too
    shapes = Profile(batch=(1, 8, 32)).input_shapes(read_metadata(onnx_path))
    cmd = trtexec_command(onnx_path, tmp_path / "m.engine", shapes, True, tmp_path / "t.cache", pins)
    assert cmd.startswith(f"trtexec --onnx={onnx_path} --saveEngine={tmp_path / 'm.engine'}")
    assert ("--minShapes=image:1x32x32x3,text_classifier:1x64,bridged_prototypes:1x64,image_prototypes:1x64,class_kl:1 "
            "--optShapes=image:8x480x640x3,text_classifier:100x64,") in cmd
    assert "--maxShapes=image:32x1080x1920x3,text_classifier:4096x64," in cmd and "class_kl:4096 " in cmd
    assert "--fp16 --precisionConstraints=obey" in cmd and f"--layerPrecisions={pins[0]}:fp32," in cmd
    assert f"--timingCacheFile={tmp_path / 't.cache'}" in cmd
    assert "--fp16" not in trtexec_command(onnx_path, tmp_path / "m.engine", shapes, False, tmp_path / "t.cache", pins)
    assert "DLA" not in cmd
    on_dla = trtexec_command(onnx_path, tmp_path / "m.engine", shapes, True, None, pins, dla_core=1)
    assert on_dla.endswith(" --useDLACore=1 --allowGPUFallback") and on_dla.startswith(cmd.split(" --timingCacheFile")[0])


def test_dla_core_checks_and_cache_key():
    """A DLA core: a number >= 0, fp16 only; an engine for a DLA core is cached apart from the GPU's (and the GPU's
    key is the one it had before DLA existed)."""
    shapes = Profile().shapes(META_DYNAMIC)
    gpu = cache_key("abc", "Orin", "10.3.0", shapes, True)
    assert cache_key("abc", "Orin", "10.3.0", shapes, True, None) == gpu
    assert len({gpu, cache_key("abc", "Orin", "10.3.0", shapes, True, 0), cache_key("abc", "Orin", "10.3.0", shapes, True, 1)}) == 3
    check_dla_core(None, False)
    check_dla_core(0, True)
    for bad in (-1, 1.0, True, "0"):
        with pytest.raises(ValueError, match="is not a core number"):
            check_dla_core(bad, True)
    with pytest.raises(ValueError, match="fp16 or int8") as raised:
        check_dla_core(0, False)
    assert "--fp32" in raised.value.hint


def test_build_engine_refuses_dla_in_fp32_before_anything(exported_onnx, tmp_path):
    lines: list[str] = []
    with pytest.raises(ValueError, match="DLA core runs fp16"):
        build_engine(exported_onnx / "model.onnx", tmp_path / "m.engine", fp16=False, dla_core=0, log=lines.append)
    assert not lines and not list(tmp_path.iterdir())


def test_the_runtime_reads_the_dla_core_from_the_engine_metadata():
    from semobridge_runtime.errors import ModelError

    def read(tensorrt: dict | None) -> ModelInfo:
        return ModelInfo.from_dict({**META_DYNAMIC.to_dict(), **({"tensorrt": tensorrt} if tensorrt is not None else {})},
                                   "model_trt.json")

    assert read(None).tensorrt is None and read({"version": "10.3"}).tensorrt.dla_core is None
    assert read({"dla_core": 1}).tensorrt.dla_core == 1
    for bad in ({"dla_core": "1"}, {"dla_core": -1}, {"dla_core": True}, {"dla_core": 1.0}):
        with pytest.raises(ModelError, match="dla_core"):
            read(bad)


def test_class_count_profile_and_class_set_inputs(exported_onnx):
    """The class set gets its own profile range, and the ONNX model TensorRT parses has no defaults for it
    (an input with an initializer would be a constant in the engine)."""
    import onnx

    meta = read_metadata(exported_onnx / "model.onnx")
    shapes = Profile(classes=(2, 10, 50)).input_shapes(meta)
    assert shapes["image"] == Profile().shapes(meta)
    assert shapes["text_classifier"] == ((2, 64), (10, 64), (50, 64)) and shapes["class_kl"] == ((2,), (10,), (50,))
    with pytest.raises(ValueError, match="class-count profile"):
        Profile(classes=(5, 2, 10)).input_shapes(meta)
    stripped = onnx.load_from_string(class_set_graph(exported_onnx / "model.onnx"))
    initializers = {t.name for t in stripped.graph.initializer}
    assert [i.name for i in stripped.graph.input] == ["image", "text_classifier", "bridged_prototypes", "image_prototypes",
                                                      "class_kl", "temperature", "threshold", "mcm_weight"]
    assert not initializers & {i.name for i in stripped.graph.input}
    assert len(initializers) == len(onnx.load(str(exported_onnx / "model.onnx")).graph.initializer) - 7


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed")
def test_without_tensorrt_build_engine_says_how_to_get_it(exported_onnx, tmp_path):
    lines: list[str] = []
    with pytest.raises(TensorRTError, match="TensorRT is not installed.*semobridge-build-engine"):
        build_engine(exported_onnx / "model.onnx", tmp_path / "m.engine", cache_dir=tmp_path, log=lines.append)
    assert lines and lines[0].startswith(f"equivalent: trtexec --onnx={exported_onnx / 'model_tensorrt.onnx'} ")
    assert "--onnx-only" in lines[1]
    assert not (tmp_path / "m.engine").exists()


def test_the_tensorrt_graph_takes_the_image_into_a_cast_and_computes_model_onnx_s_tensors(exported_onnx, tmp_path):
    """model.onnx cuts the resize's windows from the uint8 image (ONNX Runtime's fast form); the graph TensorRT builds
    from has the uint8 input feeding one Cast and nothing else (TensorRT's rule), and gives the same tensors.
    --onnx-only writes it beside the model for trtexec, without TensorRT."""
    import shutil

    import numpy as np
    import onnx
    import onnxruntime as ort
    from click.testing import CliRunner
    from onnx import numpy_helper

    from semobridge_export.cli import build_engine_main

    model = onnx.load(str(exported_onnx / "model.onnx"))
    assert {n.op_type for n in model.graph.node if "image" in n.input} == {"Slice", "Shape"}  # the cuts read uint8
    folder = shutil.copytree(exported_onnx, tmp_path / "export", ignore=shutil.ignore_patterns("*.pt2"))
    result = CliRunner().invoke(build_engine_main, [str(folder / "model.onnx"), "--onnx-only"])
    assert result.exit_code == 0, result.output
    assert f"trtexec --onnx={folder / 'model_tensorrt.onnx'} " in result.output
    assert not list(folder.glob("*.engine"))
    trt_graph = onnx.load(str(folder / "model_tensorrt.onnx"))
    assert (folder / "model_tensorrt.onnx").read_bytes() == tensorrt_graph(exported_onnx / "model.onnx")
    users = [n for n in trt_graph.graph.node if "image" in n.input]
    assert [(n.op_type, n.attribute[0].i) for n in users] == [("Cast", onnx.TensorProto.FLOAT)]
    defaults = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    feeds = {"image": np.random.default_rng(0).integers(0, 256, (2, 333, 517, 3), dtype=np.uint8)}
    feeds |= {i.name: defaults[i.name] for i in trt_graph.graph.input if i.name != "image"}
    cpu = ["CPUExecutionProvider"]
    want = ort.InferenceSession(model.SerializeToString(), providers=cpu).run(None, feeds)
    got = ort.InferenceSession(trt_graph.SerializeToString(), providers=cpu).run(None, feeds)
    assert len(got) == len(want) == len(model.graph.output)
    for name, a, b in zip([o.name for o in model.graph.output], got, want):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed")
def test_an_engine_with_the_classes_built_in_takes_only_the_image(exported_onnx, tmp_path):
    """class_inputs=False (the Triton plan): TensorRT parses the graph with its class-set defaults, which it makes
    constants, so the profile covers the image alone, as the printed trtexec line shows."""
    lines: list[str] = []
    with pytest.raises(TensorRTError):
        build_engine(exported_onnx / "model.onnx", tmp_path / "m.plan", Profile(batch=(1, 2, 8)), class_inputs=False,
                     log=lines.append)
    assert "--minShapes=image:1x32x32x3 --optShapes=image:2x480x640x3 --maxShapes=image:8x1080x1920x3 " in lines[0]
    assert "text_classifier" not in lines[0] and not (tmp_path / "m.plan").exists()


def test_gpu_name_asks_the_runtimes_cuda_binding_then_pytorch():
    import torch

    if torch.cuda.is_available():
        assert gpu_name() == torch.cuda.get_device_name(0)
    else:  # cuda-python's answer (an error without a GPU) is not taken for a name: the lookup ends in an error that says why
        with pytest.raises(TensorRTError, match="no CUDA device found"):
            gpu_name()


@pytest.mark.skipif(not HAVE_TRT, reason="TensorRT is not installed here: engine building is unverified")
def test_build_engine(exported_onnx, tmp_path):
    engine = build_engine(exported_onnx / "model.onnx", tmp_path / "m.engine", Profile(batch=(1, 2, 4)), cache_dir=tmp_path)
    assert engine.stat().st_size > 0 and engine.with_suffix(".json").is_file()
    import tensorrt as trt

    for path, class_inputs in ((engine, True), (tmp_path / "fixed.plan", False)):
        built = trt.Runtime(trt.Logger()).deserialize_cuda_engine(
            build_engine(exported_onnx / "model.onnx", path, Profile(batch=(1, 2, 4)), class_inputs=class_inputs).read_bytes())
        names = [built.get_tensor_name(i) for i in range(built.num_io_tensors)]
        inputs = [n for n in names if built.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        assert inputs == (["image", "text_classifier", "bridged_prototypes", "image_prototypes", "class_kl"]
                          if class_inputs else ["image"])


@pytest.mark.skipif(not HAVE_TRT, reason="TensorRT is not installed here: the runtime's engine backend is unverified")
def test_the_runtime_runs_a_built_engine_with_its_class_set_inputs(exported_onnx, tmp_path):
    import shutil

    import numpy as np

    from semobridge_runtime import Classifier

    folder = shutil.copytree(exported_onnx, tmp_path / "export")  # head.safetensors beside the engine: the fitted classes
    engine = build_engine(folder / "model.onnx", profile=Profile(batch=(1, 2, 4)), fp16=False)
    images = list(np.random.default_rng(0).integers(0, 256, (3, 64, 80, 3), dtype=np.uint8))
    ours, reference = Classifier.load(engine).predict(images), Classifier.load(folder / "model.onnx").predict(images)
    np.testing.assert_array_equal(ours.labels, reference.labels)
    np.testing.assert_allclose(ours.scores, reference.scores, atol=1e-3)

"""A Triton Inference Server model repository for the official Triton container.

    triton/semobridge/config.pbtxt      platform onnxruntime_onnx: dynamic batching, instance groups,
                                        the TensorRT accelerator with the export's profile (--batch, --sizes)
    triton/semobridge/labels.txt        class names, for Triton's classification extension on `scores`
    triton/semobridge/1/model.onnx      the fp32 fused graph with the fitted classes and the open-set calibration
                                        as constants (Triton feeds only `image`; model.onnx.data, if any, is a
                                        hard link): `known`, `probabilities` and `open_set_score` at the fit's
                                        threshold, T and abstention score
    triton/semobridge_trt/...           platform tensorrt_plan, when an engine was built (--engine): a plan
                                        with the fitted classes built in, since Triton batches every input

The parameters carry the model's metadata (`semobridge`, as semobridge-serve publishes it), so
RemoteClassifier talks to this server as it does to semobridge-serve. UNVERIFIED: the official
container cannot run where this was written; the configs are checked against Triton's model-config
schema (tritonclient's model_config_pb2) in the tests, but Triton has not loaded them.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from semobridge_runtime.serve.protocol import LABELS_FILE, MODEL_NAME  # one client setting for both servers
from semobridge_runtime.serve.triton_config import Batching, TensorConfig, metadata_parameters, model_outputs
from semobridge_runtime.serve.triton_config import config_text as model_config_text, text_literal

from .metadata import ModelInfo
from .tensorrt import Profile, class_set_graph

TRT_WORKSPACE_BYTES = 1 << 30


def config_text(meta: ModelInfo, profile: Profile, platform: str = "onnxruntime_onnx", name: str = MODEL_NAME) -> str:
    """config.pbtxt (Triton's ModelConfig, protobuf text format) for the fused graph described by `meta`, through
    the builder semobridge-serve uses (semobridge_runtime/serve/triton_config.py)."""
    spec = meta.input
    if spec.kind == "uint8":
        dims, dtype = [d if isinstance(d, int) else -1 for d in spec.shape[1:]], "TYPE_UINT8"
    else:
        dims, dtype = list(spec.shape[1:]), "TYPE_FP32"
    outputs = model_outputs(meta.num_classes, meta.embedding_dim, label_reshaped=True)  # the graph's label is [N]
    accelerator = _tensorrt_accelerator(meta, profile) if platform == "onnxruntime_onnx" else []
    # KIND_AUTO: one instance per GPU where there are GPUs, else one on the CPU
    return model_config_text(name, ("platform", platform), [TensorConfig(spec.name, dtype, dims)], outputs,
                             Batching(max_batch=profile.batch[2]), "KIND_AUTO", metadata_parameters(meta), accelerator)


def write_repository(root: Path, graph: Path, meta: ModelInfo, profile: Profile, engine: Path | None = None) -> Path:
    """The repository under `root`: the ONNX Runtime model, and the TensorRT-plan model when `engine` (built with
    the classes as constants: build_engine(..., class_inputs=False)) is given."""
    models = [(MODEL_NAME, "onnxruntime_onnx", _external_data(graph))]
    if engine is not None:
        models.append((f"{MODEL_NAME}_trt", "tensorrt_plan", [(engine, "model.plan")]))
    for name, platform, files in models:
        folder = root / name
        (folder / "1").mkdir(parents=True)
        (folder / "config.pbtxt").write_text(config_text(meta, profile, platform, name), encoding="utf-8")
        (folder / LABELS_FILE).write_text("".join(f"{n}\n" for n in meta.class_names), encoding="utf-8")
        for source, target in files:
            _link_or_copy(source, folder / "1" / target)
    # Triton feeds only `image`: the class set as constants, which ONNX Runtime (and its TensorRT accelerator) folds
    (root / MODEL_NAME / "1" / "model.onnx").write_bytes(class_set_graph(graph, as_inputs=False))
    return root


def _tensorrt_accelerator(meta: ModelInfo, profile: Profile) -> list[str]:
    """ONNX Runtime's TensorRT execution provider on GPU instances, fp16, engines cached, its profile fixed
    to the export's (--batch, --sizes) so that new image sizes inside it do not rebuild engines."""
    name = meta.input_name
    low, opt, high = ("x".join(map(str, shape)) for shape in profile.shapes(meta))
    settings = {"precision_mode": "FP16", "max_workspace_size_bytes": str(TRT_WORKSPACE_BYTES),
                "trt_engine_cache_enable": "1", "trt_engine_cache_path": "/tmp/semobridge_trt_cache",
                "trt_profile_min_shapes": f"{name}:{low}", "trt_profile_opt_shapes": f"{name}:{opt}",
                "trt_profile_max_shapes": f"{name}:{high}"}
    parameters = " ".join(f"parameters {{ key: {text_literal(k)} value: {text_literal(v)} }}" for k, v in settings.items())
    return ["optimization { execution_accelerators { gpu_execution_accelerator: [",
            f'  {{ name: "tensorrt" {parameters} }}',
            "] } }"]


def _external_data(graph: Path) -> list[tuple[Path, str]]:
    data = graph.with_name(f"{graph.name}.data")  # weights past 2 GB (onnx_graph.save_model)
    return [(data, "model.onnx.data")] if data.is_file() else []


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


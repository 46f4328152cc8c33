"""TensorRT engines from the exported ONNX graph (TensorRT 10 Python API).

UNVERIFIED: written from the TensorRT 10 Python API documentation; TensorRT could not be
installed where this was developed. The parts that need no TensorRT (profile shapes, cache
keys, the trtexec command line, the ONNX model without class-set defaults) are tested;
building is not. The class set is an engine input with its own profile range (--class-counts).
TensorRT builds from `tensorrt_graph`: model.onnx with the image's Cast to float first (TensorRT takes a uint8
network input only into a Cast; model.onnx converts after the resize's window cuts, faster on ONNX Runtime).
A DLA core (Jetson AGX/NX Orin, Xavier) takes the layers DLA supports, the GPU the rest (`dla_core`,
also unverified: no DLA here).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir
from semobridge_runtime.contract import ENGINE_SUFFIXES
from semobridge_runtime.metadata import ModelInfo, TensorRTBuild

from semobridge.errors import BackendError, InputError
from semobridge.files import GRAPH_BYTES, atomic_output, file_sha256, read_bytes
from semobridge.validate import output_dir, output_file

from .rewrites import hoist_input_casts

WORKSPACE_BYTES = 2 << 30
FP32_ONNX_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceL2")


class TensorRTError(BackendError):
    """TensorRT is missing or could not build the engine."""


@dataclass(frozen=True)
class Profile:
    """Optimisation profile: batch (min, opt, max), for dynamic uint8 input image sizes (H, W), and
    the class count of the class-set inputs (min, opt, max)."""

    batch: tuple[int, int, int] = (1, 1, 16)
    sizes: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] = ((32, 32), (480, 640), (1080, 1920))
    classes: tuple[int, int, int] = (1, 100, 4096)

    def input_shapes(self, meta: ModelInfo, class_inputs: bool = True) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """min, opt and max shapes of every engine input: the image, then the class-set inputs ([C, ...]) unless
        the classes are built in (class_inputs=False)."""
        if not 1 <= self.classes[0] <= self.classes[1] <= self.classes[2]:
            raise InputError(f"class-count profile {self.classes} must satisfy 1 <= min <= opt <= max")
        shapes = {meta.input_name: self.shapes(meta)}
        for spec in meta.head_inputs if class_inputs else ():
            shapes[spec.name] = tuple((c, *spec.shape[1:]) for c in self.classes)  # type: ignore[assignment]
        return shapes

    def shapes(self, meta: ModelInfo) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """min, opt and max shapes of the input described by the model's metadata."""
        if not self.batch[0] <= self.batch[1] <= self.batch[2] or self.batch[0] < 1:
            raise InputError(f"batch profile {self.batch} must satisfy 1 <= min <= opt <= max")
        shape = meta.input.shape
        out = []
        for n, (h, w) in zip(self.batch, self.sizes):
            if meta.input_kind == "float":
                out.append((n, *shape[1:]))
            else:
                out.append((n, shape[1] if isinstance(shape[1], int) else h, shape[2] if isinstance(shape[2], int) else w, 3))
        if any(a > b for lo, hi in zip(out, out[1:]) for a, b in zip(lo, hi)):
            raise InputError(f"profile shapes {out} must grow from min to opt to max")
        return out[0], out[1], out[2]


def cache_key(onnx_hash: str, gpu_name: str, trt_version: str, shapes: dict | tuple, fp16: bool,
              dla_core: int | None = None) -> str:
    """Engine cache key: GPU, TensorRT version, ONNX file hash, profile, precision and the DLA core (if any)."""
    text = json.dumps([gpu_name, trt_version, onnx_hash, shapes, fp16] + ([dla_core] if dla_core is not None else []))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def fp32_layer_names(graph: bytes) -> list[str]:
    """Nodes of the graph TensorRT parses (tensorrt_graph; their names are the layers') pinned to fp32: LayerNorm,
    softmax, reductions, and every float node outside the encoder (preprocessing with its rounding, the head's blend)."""
    from .onnx_graph import ENCODER_SCOPE, module_scope  # torch: imported when used (semobridge-export --help)

    model = onnx.load_from_string(graph)
    return [
        n.name for n in model.graph.node
        if n.op_type in FP32_ONNX_OPS or module_scope({p.key: p.value for p in n.metadata_props}) != ENCODER_SCOPE
    ]


def trtexec_command(onnx_path: Path, engine_path: Path, shapes: dict[str, tuple], fp16: bool, timing_cache: Path | None,
                    fp32_layers: list[str], dla_core: int | None = None) -> str:
    """The equivalent trtexec command line (`shapes`: input name -> min, opt, max shapes) on `onnx_path`, which
    must be the graph TensorRT builds from (tensorrt_graph, written by build_engine(onnx_only=True)), not model.onnx:
    TensorRT refuses model.onnx's uint8 cuts, and takes the class-set inputs as weights while they have
    initializers (their defaults).
    """
    def dims(i: int) -> str:
        return ",".join(f"{name}:" + "x".join(str(d) for d in s[i]) for name, s in shapes.items())

    parts = [
        "trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}",
        f"--minShapes={dims(0)}", f"--optShapes={dims(1)}", f"--maxShapes={dims(2)}",
        f"--memPoolSize=workspace:{WORKSPACE_BYTES >> 20}M",
    ] + ([f"--timingCacheFile={timing_cache}"] if timing_cache else [])
    if fp16:
        pins = ",".join(f"{name}:fp32" for name in fp32_layers)
        parts += ["--fp16", "--precisionConstraints=obey", f"--layerPrecisions={pins}", f"--layerOutputTypes={pins}"]
    if dla_core is not None:
        parts += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    return " ".join(parts)


def check_dla_core(dla_core: object, fp16: bool) -> None:
    """A DLA core is a whole number >= 0, and DLA runs fp16 (or int8), never fp32."""
    if dla_core is None:
        return
    if isinstance(dla_core, bool) or not isinstance(dla_core, int) or dla_core < 0:
        raise InputError(f"DLA core {dla_core!r} is not a core number", hint="DLA cores are numbered from 0 (--dla-core 0)")
    if not fp16:
        raise InputError("a DLA core runs fp16 or int8 layers, not fp32", hint="drop --fp32 (fp16 is the default) or --dla-core")


def gpu_name() -> str:
    """Name of CUDA device 0 (for the cache key): through cuda-python as the runtime imports it, else PyTorch."""
    try:
        from semobridge_runtime.backends.engine_io import cuda_runtime

        err, props = cuda_runtime().cudaGetDeviceProperties(0)
        if int(err) == 0:
            return props.name.decode(errors="replace").strip("\x00")
    except ImportError:  # no cuda-python (or no semobridge-runtime): PyTorch's CUDA
        pass
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    raise TensorRTError("no CUDA device found; build TensorRT engines on the machine that will run them")


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTError(
            f"TensorRT is not installed ({exc}). Install TensorRT 10 on the target (pip install tensorrt, "
            "or JetPack on a Jetson) and run `semobridge-build-engine MODEL.onnx` there."
        ) from None
    return trt


def _class_set_model(onnx_path: Path, as_inputs: bool) -> onnx.ModelProto:
    """The ONNX model with its class set (the graph inputs that have initializers: the fitted classes as
    defaults) as inputs only, without those initializers (as_inputs=True: TensorRT's parser turns an input
    that has an initializer into a constant, so the class set becomes a real engine input only without
    them), or as constants only, no longer inputs (False: for servers that feed only the image).
    External weights stay where they are."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    defaults = {i.name for i in model.graph.input} & {t.name for t in model.graph.initializer}
    field = model.graph.initializer if as_inputs else model.graph.input
    kept = [value for value in field if value.name not in defaults]
    del field[:]
    field.extend(kept)
    return model


def class_set_graph(onnx_path: Path, as_inputs: bool = True) -> bytes:
    """_class_set_model serialised (see there)."""
    return _class_set_model(onnx_path, as_inputs).SerializeToString()


def tensorrt_graph(onnx_path: Path, class_inputs: bool = True) -> bytes:
    """The graph TensorRT builds from: class_set_graph's, with the image's Cast to float first
    (rewrites.hoist_input_casts): a uint8 network input may feed nothing but a Cast in TensorRT, and model.onnx
    cuts the resize's windows from the uint8 image before converting them. The same values."""
    model = ir.from_proto(_class_set_model(onnx_path, class_inputs))
    hoist_input_casts(model)
    return ir.to_proto(model).SerializeToString()


def tensorrt_graph_path(onnx_path: Path) -> Path:
    """model.onnx -> model_tensorrt.onnx, where build_engine(onnx_only=True) writes tensorrt_graph (beside the model,
    so that weights kept in a .data file next to it are found)."""
    return onnx_path.with_name(f"{onnx_path.stem}_tensorrt.onnx")


def _use_dla(trt, builder, config, dla_core: int) -> None:
    """Run the layers DLA supports on `dla_core`, the others on the GPU (TensorRT's GPU fallback)."""
    if dla_core >= builder.num_DLA_cores:
        raise TensorRTError(f"DLA core {dla_core} asked for, but this device has {builder.num_DLA_cores} DLA cores",
                            hint="Jetson AGX Orin has 2 (0, 1), Orin NX 1 or 2, Orin Nano none: leave out --dla-core there")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = dla_core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _build(trt, onnx_path: Path, graph: bytes, shapes: dict[str, tuple], fp16: bool, fp32_layers: set[str],
           timing_cache: Path | None, dla_core: int | None = None) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(graph, str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT cannot parse {onnx_path}:\n{errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    if dla_core is not None:
        _use_dla(trt, builder, config, dla_core)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            pinned = layer.type in (trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE) or (
                layer.name in fp32_layers
            )
            if pinned and all(layer.get_output(j).dtype == trt.float32 for j in range(layer.num_outputs)):
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
    if timing_cache is not None:
        cache = config.create_timing_cache(read_bytes(timing_cache, "TensorRT timing cache", GRAPH_BYTES)
                                           if timing_cache.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise TensorRTError(f"TensorRT could not build an engine from {onnx_path}; see the log above")
    if timing_cache is not None:
        with atomic_output(timing_cache, "TensorRT timing cache") as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(memoryview(engine))


def engine_path_for(onnx_path: Path) -> Path:
    """model.onnx -> model_trt.engine (its metadata: model_trt.json, apart from model.json)."""
    return onnx_path.with_name(f"{onnx_path.stem}_trt{ENGINE_SUFFIXES[0]}")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path | None = None,
    profile: Profile = Profile(),
    fp16: bool = True,
    cache_dir: str | Path | None = None,
    log=print,
    class_inputs: bool = True,
    dla_core: int | None = None,
    onnx_only: bool = False,
) -> Path:
    """Build a TensorRT engine and write it with its `<stem>.json` metadata. With `cache_dir`, built
    engines and TensorRT's timing cache are kept there and reused (nothing is cached otherwise).
    class_inputs=False builds the fitted classes (the graph's defaults) into the engine as constants,
    leaving the image its only input (for servers that batch every input, as Triton does).
    dla_core: build for that DLA core (fp16 only), with the layers DLA cannot run on the GPU; the runtime
    loads the engine onto the same core (its metadata's tensorrt.dla_core).
    onnx_only: write only the graph TensorRT builds from (tensorrt_graph, beside the model: tensorrt_graph_path) and
    print the trtexec command that builds the engine from it; needs no TensorRT; returns that graph's path."""
    from .metadata import read_metadata, sidecar_path, with_precision  # torch: imported when used

    check_dla_core(dla_core, fp16)
    onnx_path = Path(onnx_path)
    engine_path = output_file(engine_path if engine_path else engine_path_for(onnx_path), "engine file")
    meta = read_metadata(onnx_path)
    shapes = profile.input_shapes(meta, class_inputs)
    cache = Path(output_dir(cache_dir, "--cache-dir")) if cache_dir is not None else None
    graph = tensorrt_graph(onnx_path, class_inputs)
    fp32_layers = fp32_layer_names(graph)
    graph_file = tensorrt_graph_path(onnx_path)

    def equivalent(timing_cache: Path | None, note: bool = True) -> None:
        log("equivalent: " + trtexec_command(graph_file, engine_path, shapes, fp16, timing_cache, fp32_layers, dla_core))
        if note:
            log(f"(trtexec builds from {graph_file.name}: write it with `semobridge-build-engine {onnx_path} --onnx-only`)")

    if onnx_only:
        with atomic_output(output_file(graph_file, "TensorRT graph"), "TensorRT graph") as tmp:
            tmp.write_bytes(graph)
        equivalent(cache and cache / "timing.cache", note=False)
        return graph_file
    try:
        trt = _import_tensorrt()
    except TensorRTError:
        equivalent(cache and cache / "timing.cache")
        raise
    if dla_core is not None and any(low != high for low, _, high in shapes.values()):
        log("note: DLA runs fixed shapes; with a dynamic profile TensorRT may leave layers to the GPU. For DLA give "
            "min = opt = max: --batch N,N,N --sizes HxW,HxW,HxW --class-counts C,C,C")
    gpu = gpu_name()
    timing_cache = cache / f"timing-{_slug(gpu)}-trt{trt.__version__}.cache" if cache else None
    equivalent(timing_cache)
    key = cache_key(file_sha256(onnx_path), gpu, trt.__version__, shapes, fp16, dla_core)
    cached = cache / f"{key}.engine" if cache else None
    if cached is not None and cached.is_file():
        log(f"engine cache hit: {cached}")
        data = read_bytes(cached, "cached engine", GRAPH_BYTES)
    else:
        data = _build(trt, onnx_path, graph, shapes, fp16, set(fp32_layers), timing_cache, dla_core)
        if cached is not None:
            with atomic_output(cached, "cached engine") as tmp:
                tmp.write_bytes(data)
    with atomic_output(engine_path, "engine file") as tmp:
        tmp.write_bytes(data)
    meta = dataclasses.replace(with_precision(meta, "fp16" if fp16 else "fp32"),
                               tensorrt=TensorRTBuild(trt.__version__, shapes, key, dla_core))
    with atomic_output(sidecar_path(engine_path), "engine metadata") as tmp:
        tmp.write_text(meta.to_json(indent=2), encoding="utf-8")
    return engine_path

"""The library's and the exporter's readers under Hypothesis: model files (modelfile.read_info, SeMoBridge.load),
an exported graph's metadata (read_export_metadata) and an export folder's manifest (check_out_dir) give a result or
our InputError / ModelError, never another exception (tests/runtime/fuzzing.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from safetensors.numpy import save_file

from semobridge.errors import InputError, ModelError
from semobridge.model import SeMoBridge
from semobridge.modelfile import METADATA_KEY, ExportInfo, ModelInfo, read_export_metadata, read_info
from semobridge.params import BlendParams
from semobridge_export.exporter import MANIFEST, check_out_dir
from tests.runtime.contract_model import build_contract_model, contract_metadata
from tests.runtime.fuzzing import DEEP, FUZZ_SETTINGS, JSON, edited, file_inputs, join, split

OURS = (InputError, ModelError)
C, D, D_T = 2, 4, 3  # a small model file: 2 classes, 4-wide image embeddings, 3-wide text EOS
INFO = ModelInfo(class_names=["red fox", "blue whale"], backbone={"name": "toy", "pretrained": "none", "weights_hash": "0" * 16},
                 image_size=32, mean=[0.5] * 3, std=[0.25] * 3, params=BlendParams().to_dict())
SHAPES = {"bridge.pinv": (D, D_T), "bridge.text_projection": (D_T, D), "bridge.eos_length": (1,), "text_classifier": (C, D),
          "bridged_prototypes": (C, D), "image_prototypes": (C, D), "class_kl": (C,), "class_weights": (C,)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reader_fuzz")


@pytest.fixture(scope="module")
def model_file(folder: Path) -> bytes:
    """The bytes of a valid model file, as `semobridge fit` writes them (safetensors, our metadata)."""
    rng = np.random.default_rng(0)
    tensors = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in SHAPES.items()}
    save_file(tensors, str(folder / "valid.safetensors"), metadata=INFO.to_metadata())
    assert read_info(folder / "valid.safetensors").class_names == INFO.class_names
    SeMoBridge.load(folder / "valid.safetensors")
    return (folder / "valid.safetensors").read_bytes()


@st.composite
def info_edits(draw, data: bytes) -> bytes:
    """The model file `data` with its semobridge metadata (the JSON inside the header's __metadata__) edited somewhere."""
    header, body = split(data)
    fields = json.loads(header["__metadata__"][METADATA_KEY])
    header["__metadata__"][METADATA_KEY] = draw(st.sampled_from([json.dumps(edited(fields, draw)), "[" * 3000]))
    return join(header, body)


def model_inputs(data: bytes) -> st.SearchStrategy[bytes]:
    return file_inputs(data) | info_edits(data)


def read_model(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        info = read_info(path)
    except OURS:
        return
    assert info.class_names
    try:
        SeMoBridge.load(path)
    except OURS:
        pass


@FUZZ_SETTINGS
@given(data=st.data())
def test_model_files_give_a_model_or_our_error(folder: Path, model_file: bytes, data) -> None:
    read_model(folder / "model.safetensors", data.draw(model_inputs(model_file)))


def test_model_file_regressions(folder: Path, model_file: bytes) -> None:
    """What the fuzzer found (each raised another exception than ModelError before its fix)."""
    header, body = split(model_file)
    for case in (b"\x03\0\0\0\0\0\0\0\"x\"",  # a header that is not an object: AttributeError
                 b"\x10\x27\0\0\0\0\0\0" + b"[" * 5000 + b"]" * 5000,  # nested too deep: RecursionError
                 join({**header, "class_kl": 5}, body)):  # a tensor entry that is not an object: AttributeError
        with pytest.raises(ModelError):
            (folder / "case.safetensors").write_bytes(case)
            read_info(folder / "case.safetensors")


@pytest.fixture(scope="module")
def graph(folder: Path) -> onnx.ModelProto:
    """A small exported-style graph (tests/runtime/contract_model.py) whose metadata the fuzzer replaces."""
    return onnx.load(build_contract_model(folder / "contract.onnx"))


@FUZZ_SETTINGS
@given(text=st.one_of(st.text(max_size=32), DEEP, JSON.map(json.dumps),
                      st.builds(json.dumps, st.just(contract_metadata(["a", "b"], "uint8", ["N", "H", "W", 3], 8)))),
       raw=st.binary(max_size=256))
@example(text="[" * 5000 + "]" * 5000, raw=b"")
def test_export_metadata_gives_metadata_or_a_model_error(folder: Path, graph: onnx.ModelProto, text: str, raw: bytes) -> None:
    path = folder / "graph.onnx"
    for data in (raw, None):
        if data is None:
            del graph.metadata_props[:]
            graph.metadata_props.add(key=METADATA_KEY, value=text)
            data = graph.SerializeToString()
        path.write_bytes(data)
        try:
            assert isinstance(read_export_metadata(path), ExportInfo)
        except ModelError:
            pass


@FUZZ_SETTINGS
@given(manifest=st.one_of(st.binary(max_size=256), DEEP.map(str.encode), JSON.map(lambda v: json.dumps(v).encode()),
                          JSON.map(lambda v: json.dumps({"semobridge_export": "0.1.0", "files": v}).encode())))
@example(manifest=b'{"files": [1]}')  # AttributeError: a file name that is not a string
@example(manifest=b"[" * 5000 + b"]" * 5000)  # RecursionError
def test_a_manifest_gives_a_decision_or_an_input_error(folder: Path, manifest: bytes) -> None:
    """check_out_dir on a folder holding an export's model.onnx and a fuzzed manifest: the folder, or InputError."""
    out = folder / "export"
    out.mkdir(exist_ok=True)
    (out / "model.onnx").write_bytes(b"x")
    (out / MANIFEST).write_bytes(manifest)
    try:
        assert check_out_dir(out) == out
    except InputError:
        pass


@FUZZ_SETTINGS
@given(data=st.data())
@example(data=None)
def test_a_model_head_gives_a_head_or_a_model_error(folder: Path, model_file: bytes, data) -> None:
    """The runtime's reader of an export's head.safetensors (a model file) for class enrolment."""
    from semobridge_runtime import ModelError as RuntimeModelError
    from semobridge_runtime.enrol import FittedHead
    from semobridge_runtime.metadata import parse_metadata

    meta = {**contract_metadata(INFO.class_names, "uint8", ["N", "H", "W", 3], D), "enrolment": {"head": "head.safetensors"}}
    info = parse_metadata(json.dumps(meta), "fuzzed")
    header, body = split(model_file)
    regressions = [join({**header, "__metadata__": {METADATA_KEY: "[" * 3000}}, body),  # RecursionError
                   join({**header, "__metadata__": {METADATA_KEY: "[]"}}, body),  # AttributeError: not an object
                   join({**header, "__metadata__": {METADATA_KEY: json.dumps({**json.loads(header["__metadata__"][METADATA_KEY]),
                                                                             "backbone": []})}}, body)]  # AttributeError
    for case in regressions if data is None else [data.draw(model_inputs(model_file))]:
        (folder / "head.safetensors").write_bytes(case)
        try:
            assert FittedHead(folder / "model.onnx", info).fitted.names == tuple(INFO.class_names)
        except RuntimeModelError:
            pass

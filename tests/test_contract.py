"""The exported-model contract has one home, the runtime package (semobridge_runtime.contract: names;
semobridge_runtime.metadata: the metadata's schema): export writes through it, and the library, the Python runtime,
serving, the runtime tests' toy models and the C library (runtime/c/src/contract.h, generated from it) read
through it. These tests build one metadata from the schema and check that every reader reads the same values."""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import semobridge.modelfile as modelfile
import semobridge.validate as validate
import semobridge_export.fused as fused
import semobridge_export.metadata as export_metadata
import semobridge_runtime.limits as runtime_limits
from semobridge_runtime import Classifier, ModelError, contract
from semobridge_runtime.limits import ImageLimits
from semobridge_runtime.metadata import FORMAT_VERSION, Backbone, Calibration, ModelInfo, TextInfo
from semobridge_runtime.openset import OpenSet
from semobridge_runtime.serve.protocol import METADATA
from semobridge_runtime.serve.repository import model_parameters
from semobridge_runtime.serve.settings import ServeSettings

from tests.runtime.conftest import c_build, make_model  # noqa: F401  (fixtures)
from tests.runtime.contract_model import build_contract_model, contract_info
from tests.runtime.test_c_library import c_classify, c_load, lib  # noqa: F401  (lib: a fixture)

ROOT = Path(__file__).resolve().parents[1]
C_SRC = ROOT / "runtime" / "c" / "src"


def test_the_names_have_one_definition():
    """Export, the library and serving use the runtime's names (the same objects, not equal copies)."""
    assert modelfile.METADATA_KEY is export_metadata.METADATA_KEY is contract.METADATA_KEY
    assert export_metadata.CLASS_NAMES_KEY is contract.CLASS_NAMES_KEY
    assert export_metadata.TEXT_METADATA_KEY is contract.TEXT_METADATA_KEY
    assert modelfile.FORMAT is contract.MODEL_FILE_FORMAT and export_metadata.FORMAT_VERSION is FORMAT_VERSION
    assert fused.OUTPUT_NAMES is contract.OUTPUTS and fused.HEAD_INPUTS is contract.HEAD_INPUTS
    assert METADATA is contract.METADATA_KEY


def test_the_c_header_is_generated_from_the_contract():
    """runtime/c/src/contract.h is what tools/contract_header.py writes, and the C sources spell no contract name
    themselves (they use its macros)."""
    sys.path.insert(0, str(ROOT / "runtime" / "c" / "tools"))
    try:
        import contract_header
    finally:
        sys.path.pop(0)
    assert contract_header.header() == (C_SRC / "contract.h").read_text(), \
        "regenerate: python runtime/c/tools/contract_header.py > runtime/c/src/contract.h"
    model, classes = ((C_SRC / name).read_text() for name in ("semobridge.c", "classes.c"))
    for text, names in ((model, {contract.CLASS_NAMES_KEY, *contract.HEAD_INPUTS, *contract.RUN_OUTPUTS}),
                        (classes, {contract.CLASS_FILE_FORMAT, contract.CLASS_FILE_NAMES, *contract.HEAD_INPUTS})):
        literals = set(re.findall(r'"([^"\\\n]*)"', text))
        assert not literals & names, f"the C library spells {literals & names}: use contract.h's macros"
    assert set(re.findall(r"CustomMetadataMap\(meta, alloc, (\w+)", model)) == {"SB_METADATA_KEY", "SB_CLASS_NAMES_KEY"}


def test_the_c_reader_reads_keys_of_the_schema():
    """Every metadata key runtime/c/src/semobridge.c looks up is a field of ModelInfo (or of the field it is in)."""
    text = (C_SRC / "semobridge.c").read_text()
    keys = set(re.findall(r'json_(?:get|positive|text)\(\w+, \w+, "([^"]+)"', text))
    keys |= set(re.findall(r'keys\[\d*\] = \{([^}]*)\}', text)[0].replace('"', "").replace(" ", "").split(","))
    from semobridge_runtime.openset import OpenSet  # "open_set": its threshold (the C library's sb_unknown_threshold)

    known = {f.name for cls in (ModelInfo, Backbone, ImageLimits, OpenSet) for f in dataclasses.fields(cls)}
    assert keys and keys <= known, keys - known
    assert {"format_version", "class_names", "image_size", "embedding_dim", "limits", "bridge_hash"} <= keys


def test_the_export_writes_exactly_the_schema(exported_onnx):
    """Every artifact's metadata reads into the schema and writes back byte for byte: no key the schema does not
    know (it would be lost on the way through serving), none it writes differently."""
    for sidecar in sorted(exported_onnx.glob("*.json")):
        if sidecar.name == "manifest.json":
            continue
        text = sidecar.read_text()
        assert ModelInfo.from_json(text, sidecar.name).to_json(indent=2) == text, sidecar.name
    import onnx

    for tower in ("text.onnx", "text_int8.onnx"):
        props = {p.key: p.value for p in onnx.load(str(exported_onnx / tower), load_external_data=False).metadata_props}
        text = props[contract.TEXT_METADATA_KEY]
        assert TextInfo.from_json(text, tower).to_json() == text


@pytest.fixture(scope="module")
def one_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelInfo, Path]:
    """A toy model whose metadata is built from the schema, with values other than every default."""
    info = dataclasses.replace(
        contract_info(["red fox", "Große Straße", "🐋 whale"], "uint8", ["N", "H", "W", 3], 8),
        limits=ImageLimits(max_side=100, max_pixels=5000, max_aspect=4.0), shots=7, variant="trained",
        backbone=Backbone("toy-b", "weights.bin", "1234abcd1234abcd"), val_accuracy=0.625, library_version="9.9.9",
        open_set=Calibration(OpenSet(0.5, 0.25, 0.9, "held-out"), 0.2, 0.1))
    path = build_contract_model(tmp_path_factory.mktemp("one_source") / "model.onnx", num_classes=3,
                                meta_changes=info.to_dict())
    return info, path


def test_every_reader_reads_one_source(one_source, lib) -> None:  # noqa: F811  (lib: the fixture)
    info, path = one_source
    # the library (`semobridge info`)
    assert modelfile.read_export_metadata(path) == info
    described = modelfile.describe_export(modelfile.read_export_metadata(path))
    assert "max_side 100" in described and "toy-b" in described and "62.50 %" in described
    # the Python runtime
    with pytest.warns(UserWarning, match="before its graph decided"):  # the toy graph has no decision outputs
        clf = Classifier.load(path)
    assert clf.info == info and clf.limits == info.limits and tuple(clf.class_names) == info.class_names
    assert (clf.temperature, clf.threshold) == (0.5, None)  # unknown off (tests/runtime/test_front_ends.py)
    # serving: the metadata the model config publishes
    published = model_parameters(clf, ServeSettings(model=str(path)))
    assert ModelInfo.from_json(published[METADATA], "config") == info
    assert json.loads(published["backbone"]) == "toy-b" and json.loads(published["shots"]) == 7
    # the C library: classes, width and the image limits of the same metadata
    rc, handle, err = c_load(lib, path)
    assert rc == 0, err
    try:
        names = tuple(lib.sb_class_name(handle, i).decode() for i in range(lib.sb_num_classes(handle)))
        assert names == info.class_names and lib.sb_embedding_dim(handle) == info.embedding_dim
        for h, w in [(30, 100), (30, 101), (60, 90), (20, 90)]:  # inside; max_side; max_pixels; max_aspect
            c_ok = c_classify(lib, handle, np.zeros((h, w, 3), np.uint8))[0] == 0
            try:
                clf.predict(np.zeros((h, w, 3), np.uint8))
                python_ok = True
            except Exception:  # noqa: BLE001  (InputError expected; compared with C's answer)
                python_ok = False
            assert c_ok == python_ok == ((h, w) == (30, 100)), (h, w)
    finally:
        lib.sb_close(handle)


@pytest.mark.parametrize("version, advice", [(FORMAT_VERSION + 1, "upgrade"), (0, "re-export"), ("1", "re-export")])
def test_every_reader_refuses_a_format_it_does_not_know(one_source, tmp_path, lib, version, advice) -> None:  # noqa: F811
    info, _ = one_source
    path = build_contract_model(tmp_path / "model.onnx", num_classes=3,
                                meta_changes={**info.to_dict(), "format_version": version})
    for read in (lambda: Classifier.load(path), lambda: modelfile.read_export_metadata(path),
                 lambda: ModelInfo.from_json((tmp_path / "model.json").read_text(), "model.json")):
        with pytest.raises(ModelError, match=advice):
            read()
    rc, handle, err = c_load(lib, path)
    assert rc == -2 and handle.value is None and advice in err and "format" in err, err  # SB_EMODEL


def test_old_metadata_reads_with_the_documented_defaults() -> None:
    """Format 1 as the first exports wrote it (no limits, class-set, open-set, precision or prompt fields)."""
    old = {"format_version": 1, "class_names": ["a", "b"], "input": {"name": "image", "kind": "uint8"},
           "image_size": 224, "embedding_dim": 512, "num_classes": 2}
    info = ModelInfo.from_dict(old, "old.json")
    assert (info.limits, info.precision, info.head_inputs, info.open_set) == (ImageLimits(), "fp32", (), None)
    assert (info.enrolment, info.bridge_hash, info.int8, info.prompts.templates) == (None, None, None, ())
    assert ModelInfo.from_dict(info.to_dict(), "again") == info


@pytest.mark.parametrize("change, where", [
    ({"embedding_dim": "8"}, "embedding_dim is not an int"), ({"class_names": "ab"}, "class_names is not a list"),
    ({"input": {"kind": "uint8", "shape": ["N", 1.5]}}, "input.shape[1]"), ({"image_size": True}, "image_size"),
    ({"head_inputs": [{"dtype": "float32"}]}, "head_inputs[0].name is missing"),
    ({"int8": {"label_agreement": "all"}}, "int8.label_agreement is not a number"),
    ({"prompts": {"descriptions": {"fox": "red"}}}, "prompts.descriptions.fox is not a list"),
    ({"limits": {"max_side": 0}}, "limits"), ({"input": {"kind": "rgb565"}}, "unknown input kind"),
    ({"precision": "int4"}, "precision 'int4'"), ({"class_names": ["a", "A"]}, "class names are unusable"),
])
def test_a_malformed_field_is_named(change, where) -> None:
    values = {**contract_info(["a", "b"], "uint8", ["N", "H", "W", 3], 8).to_dict(), **change}
    with pytest.raises(ModelError) as info:
        ModelInfo.from_dict(values, "model.json")
    assert str(info.value).startswith("model.json") and where in str(info.value), str(info.value)


def test_image_limits_agree_everywhere(exported_onnx):
    real = json.loads((exported_onnx / "model.json").read_text())
    assert real["limits"] == validate.limits() == dataclasses.asdict(runtime_limits.ImageLimits())
    assert runtime_limits.MAX_THREADS == validate.MAX_THREADS
    header = (ROOT / "runtime" / "c" / "include" / "semobridge.h").read_text()
    for name, value in [("SB_MAX_SIDE", validate.MAX_SIDE), ("SB_MAX_PIXELS", validate.MAX_PIXELS),
                        ("SB_MAX_ASPECT", validate.MAX_ASPECT), ("SB_MAX_THREADS", validate.MAX_THREADS)]:
        literal = re.search(rf"#define {name} (\S+(?: << \d+\))?)", header).group(1)
        number = re.fullmatch(r"\(?(\d+)(?:LL)?(?: << (\d+)\))?(?:\.0)?", literal)
        assert number, f"{name} {literal}"
        assert int(number.group(1)) << int(number.group(2) or 0) == value, name

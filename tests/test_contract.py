"""The exported-model contract has copies that cannot import each other (the runtime depends on nothing
of ours, the C library is C, the runtime tests build toy models): this test keeps them equal."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import semobridge.modelfile as modelfile
import semobridge.validate as validate
import semobridge_export.metadata as export_metadata
import semobridge_runtime.limits as runtime_limits
import semobridge_runtime.metadata as runtime_metadata
from tests.runtime.contract_model import contract_metadata

ROOT = Path(__file__).resolve().parents[1]
C_SOURCE = (ROOT / "runtime" / "c" / "src" / "semobridge.c").read_text()


def test_metadata_keys_agree_everywhere():
    key = modelfile.METADATA_KEY
    assert export_metadata.METADATA_KEY == runtime_metadata.METADATA_KEY == key
    lookups = set(re.findall(r'CustomMetadataMap\(meta, alloc, "([^"]+)"', C_SOURCE))
    assert lookups == {key, export_metadata.CLASS_NAMES_KEY}, "the C library reads exactly the exporter's two keys"
    contract = (ROOT / "tests" / "runtime" / "contract_model.py").read_text()
    assert f'"{key}": json.dumps(meta)' in contract and f'"{export_metadata.CLASS_NAMES_KEY}": ' in contract


def test_format_versions_agree():
    assert export_metadata.FORMAT_VERSION <= runtime_metadata.SUPPORTED_FORMAT_VERSION
    assert contract_metadata(["a", "b"], "uint8", ["N", "H", "W", 3], 8)["format_version"] == export_metadata.FORMAT_VERSION


def test_the_toy_models_of_the_runtime_tests_carry_what_the_exporter_writes(exported_onnx):
    real = json.loads((exported_onnx / "model.json").read_text())
    toy = contract_metadata(["a", "b"], "uint8", ["N", "H", "W", 3], 8)
    missing = set(toy) - set(real)
    assert not missing, f"the runtime tests rely on keys the exporter does not write: {missing}"
    for key in ("input", "limits"):
        if key in toy:
            assert set(toy[key]) <= set(real[key]), key


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

"""The runtime's readers under Hypothesis: class files, safetensors files and an exported model's metadata give a
result or a ModelError (InputError where the input is an argument), never another exception (fuzzing.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from semobridge_runtime import ModelError, tensorfile
from semobridge_runtime.classes import FORMAT, NAMES_TENSOR, TENSORS, ClassSet, Identity
from semobridge_runtime.errors import InputError
from semobridge_runtime.metadata import parse_metadata

from .contract_model import BRIDGE_HASH, contract_metadata, toy_class_set
from .fuzzing import DEEP, FUZZ_SETTINGS, JSON, edited, file_inputs

TOY = Identity("toy", "0" * 16, BRIDGE_HASH, 8)
TOY_META = {"format": FORMAT, "weights_hash": TOY.weights_hash, "bridge_hash": TOY.bridge_hash}
#: What the fuzzers found (each raised another exception than ModelError before its fix):
DEEP_HEADER = b"\x10\x27\0\0\0\0\0\0" + b"[" * 5000 + b"]" * 5000  # RecursionError from json
STRING_HEADER = b"\x03\0\0\0\0\0\0\0\"x\""  # AttributeError: a header that is not an object
ONE_WIDE = tensorfile.encode({**{n: np.zeros(1, np.float32) for n in TENSORS}, NAMES_TENSOR: np.frombuffer(b"a", np.uint8)},
                             TOY_META)  # IndexError: T, P and I of rank 1
CLASS_FILE = ClassSet(("a", "b", "Große Straße 🐋"), *toy_class_set(3, 8, 1)).to_bytes(TOY)
METADATA = {**contract_metadata(["a", "b"], "uint8", ["N", "H", "W", 3], 8),
            "limits": {"max_side": 16384, "max_pixels": 1 << 26, "max_aspect": 32}}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file, rewritten for every example (Hypothesis runs a test many times within one fixture's life)."""
    return tmp_path_factory.mktemp("reader_fuzz") / "input"


def test_the_valid_inputs_are_read(scratch: Path) -> None:
    """The fuzzers start from inputs the readers take (else the structured mutations would test little)."""
    scratch.write_bytes(CLASS_FILE)
    assert ClassSet.load(scratch, TOY).names == ("a", "b", "Große Straße 🐋")
    assert parse_metadata(json.dumps(METADATA), "m").class_names == ("a", "b")


@st.composite
def class_files(draw) -> bytes:
    """Well-formed class files whose tensors have shapes and dtypes near the right ones (ranks 0 to 3, C and d off by
    one, another dtype), with any values (NaN and infinities included) and names that are mostly usable."""
    C, d = draw(st.integers(1, 3)), draw(st.integers(1, 9))
    rows = draw(st.sampled_from([(C, d), (C, 8), (C,), (), (C, d, 1), (C + 1, d), (d, C)]))  # T, P and I, mostly alike
    shapes = {**dict.fromkeys(TENSORS[:3], rows), "class_kl": draw(st.sampled_from([(C,), (C, 1), (), (C + 1,)]))}
    if draw(st.booleans()):
        shapes[draw(st.sampled_from(TENSORS))] = draw(st.sampled_from([(C, d), (C,), (), (C, d, 1)]))
    tensors = {}
    for name in draw(st.permutations([*TENSORS, NAMES_TENSOR]))[: draw(st.sampled_from([5, 5, 5, 4]))]:
        if name == NAMES_TENSOR:
            names = draw(st.lists(st.text(min_size=1, max_size=4), min_size=C - 1, max_size=C + 1) | st.just(["a", "b", "c"][:C]))
            tensors[name] = np.frombuffer("\n".join(names).encode("utf-8", "surrogatepass"), np.uint8)
            continue
        dtype = draw(st.sampled_from(["F32"] * 4 + sorted(tensorfile.DTYPES)))
        size = int(np.prod(shapes[name])) * tensorfile.DTYPES[dtype].itemsize
        data = draw(st.binary(min_size=size, max_size=size) | st.just(b"\0" * size))
        tensors[name] = np.frombuffer(data, tensorfile.DTYPES[dtype]).reshape(shapes[name])
    return tensorfile.encode(tensors, TOY_META)


@st.composite
def metadata_edits(draw) -> str:
    return json.dumps(edited(METADATA, draw))


@FUZZ_SETTINGS
@given(data=file_inputs(CLASS_FILE))
@example(data=DEEP_HEADER)
def test_class_files_give_a_set_or_a_model_error(scratch: Path, data: bytes) -> None:
    check_class_file(scratch, data)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # F64 values beyond float32
@FUZZ_SETTINGS
@given(data=class_files())
@example(data=ONE_WIDE)
def test_class_files_of_any_shape_give_a_set_or_a_model_error(scratch: Path, data: bytes) -> None:
    check_class_file(scratch, data)


def check_class_file(scratch: Path, data: bytes) -> None:
    scratch.write_bytes(data)
    try:
        classes = ClassSet.load(scratch, TOY)
    except ModelError:
        return
    assert 1 <= len(classes) and classes.embedding_dim == TOY.embedding_dim


@FUZZ_SETTINGS
@given(data=file_inputs(CLASS_FILE))
@example(data=DEEP_HEADER)
@example(data=STRING_HEADER)
def test_safetensors_files_give_tensors_or_a_model_error(scratch: Path, data: bytes) -> None:
    scratch.write_bytes(data)
    try:
        tensors, meta = tensorfile.read(scratch)
    except ModelError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    for array in tensors.values():
        array.sum()  # the array is whole: reading it touches no memory outside the file


@FUZZ_SETTINGS
@given(text=st.one_of(st.text(max_size=64), DEEP, JSON.map(json.dumps), metadata_edits()))
@example(text="[" * 5000 + "]" * 5000)
@example(text='{"format_version": Infinity}')  # OverflowError from int()
def test_model_metadata_gives_info_or_a_model_error(text: str) -> None:
    try:
        info = parse_metadata(text, "fuzzed")
    except (ModelError, InputError):
        return
    assert info.class_names and info.input_kind in ("uint8", "float")

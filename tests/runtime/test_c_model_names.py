"""sb_open checks a model's class names: their count against the graph's (run once where its scores do not declare
it) and each name with the class-name rule, which must be the Python one (semobridge_runtime.names.check_names, which
semobridge.validate.class_names is): Hypothesis draws name lists and both verdicts must agree.

The models are the shared ones with their metadata edited (onnx, into tmp_path): no export here.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import onnx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from semobridge_runtime.names import check_names
from semobridge_runtime.errors import InputError

from .fuzzing import FUZZ_SETTINGS
from .test_c_library import c_load, lib  # noqa: F401  (fixture)

SB_EMODEL = -2
CLASS_NAMES_KEY = "semobridge.class_names"


def renamed(model: onnx.ModelProto, path: Path, names: list[str], joined: str | None = None) -> Path:
    """`model` with class_names (and num_classes) in its metadata and the joined key replaced, saved to `path`."""
    props = {p.key: p.value for p in model.metadata_props}
    meta = {**json.loads(props["semobridge"]), "class_names": names, "num_classes": len(names)}
    props.update({"semobridge": json.dumps(meta), CLASS_NAMES_KEY: "\n".join(names) if joined is None else joined})
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    del edited.metadata_props[:]
    for key, value in props.items():
        edited.metadata_props.add(key=key, value=value)
    path.write_bytes(edited.SerializeToString())
    return path


def c_open(lib: ctypes.CDLL, path: Path) -> tuple[int, str, list[str]]:
    """(sb_load's code, its message, the class names it reports)."""
    rc, handle, err = c_load(lib, path)
    names = []
    if rc == 0:
        names = [lib.sb_class_name(handle, i).decode() for i in range(lib.sb_num_classes(handle))]
        lib.sb_close(handle)
    return rc, err, names


@pytest.fixture(scope="module")
def tiny(onnx_model: Path) -> onnx.ModelProto:
    """The tiny open_clip export (5 classes, its class set as data: the graph's scores width is dynamic)."""
    return onnx.load(onnx_model)


@pytest.mark.parametrize("names, joined, message", [
    (["a", "b", "c", "d"], None, "the model's scores have 5 classes but its metadata names 4; re-export it"),
    (["a", "b", "c", "d", "e", "f"], None, "the model's scores have 5 classes but its metadata names 6; re-export it"),
    (["a", "", "c", "d", "e"], None, "the model's class names are unusable (class name 1, \"\", is empty); re-export it"),
    (["a", "b", "c", "d", "A "], None, "class name 4, \"A \", repeats class 0, \"a\", ignoring case"),
    (["a", "b\tc", "c", "d", "e"], None, "class name 1, \"b\\u0009c\", contains a control character (U+0009)"),
    (["a", "b", "c", "d", "é" * 257], None, "has 257 characters, over 256"),
    (["a\nb", "c", "d", "e"], None, "lists 4 class names in 'class_names' but 5 lines in 'semobridge.class_names'"),
    (["a", "b", "c", "d", "e"], "a\nb\nc\nd\nf", "names class 4 differently in 'class_names' and in 'semobridge.class_names'"),
])
def test_c_refuses_class_names_that_do_not_fit_the_model(lib, tiny, tmp_path, names, joined, message) -> None:
    rc, err, _ = c_open(lib, renamed(tiny, tmp_path / "model.onnx", names, joined))
    assert rc == SB_EMODEL and message in err, err


def test_c_opens_renamed_classes(lib, tiny, tmp_path) -> None:
    names = ["Rotfuchs", "Blauwal", "grüner Baum", "gelbes Taxi", "Große Straße 🐋"]
    assert c_open(lib, renamed(tiny, tmp_path / "model.onnx", names)) == (0, "", names)


def python_verdict(names: list[str]) -> bool:
    """Whether the class-name rule (semobridge_runtime.names.check_names, which the library calls too) takes these names."""
    try:
        check_names(names)
    except InputError:
        return False
    return True


@pytest.fixture(scope="module")
def toy(make_model) -> onnx.ModelProto:
    """The toy graph with its class set as data (fast to open) and three classes."""
    return onnx.load(make_model(head_as_data=True, num_classes=3))


#: Characters where the rule has something to say: case folding (ß, ς, the Kelvin sign, ligatures), white space that
#: strip() removes, control characters (C0, C1, a NUL), line and paragraph separators, format characters (refused, but
#: for the joiners), a folding new in Unicode 14, and plain letters.
CHARS = st.sampled_from(list("aAbB ßSsΣσςKkﬀf🐋é\t\n\r\x00\x1f\x7f\x85\u00a0\u2028\u2029\u3000\u200b\u212a\u0130i"
                             "\u200c\u200d\ufeff\u00ad\u2c2f\u2c5f\u212bå"))
NAME = st.text(CHARS, max_size=5) | st.sampled_from(["x" * 256, "é" * 257, " " * 3, "\u3000"])


@FUZZ_SETTINGS
@given(names=st.lists(NAME, min_size=3, max_size=3))
@example(names=["a", "", "b"]).via("the issue's empty name")
@example(names=["a\nb", "c", "d"]).via("the issue's line break")
@example(names=["STRASSE", "straße", "x"]).via("full case folding")
def test_c_takes_the_names_python_takes(lib, toy, tmp_path_factory, names) -> None:
    path = tmp_path_factory.getbasetemp() / "names.onnx"
    rc, err, opened = c_open(lib, renamed(toy, path, names))
    assert (rc == 0) == python_verdict(names), (names, rc, err)
    assert rc in (0, SB_EMODEL) and (rc != 0 or opened == names), (names, err)

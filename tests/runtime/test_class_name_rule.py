"""The one class-name rule (semobridge_runtime/names.py) against its table of cases (tests/class_names.json) in the
Python runtime (name lists, added names, class files) and in the C library (the same class files, through
sb_set_classes); and its Unicode tables, regenerated here, against the committed Python module and C header."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np
import pytest

from semobridge_runtime import names as rule
from semobridge_runtime import tensorfile
from semobridge_runtime.classes import FORMAT, NAMES_TENSOR, TENSORS, ClassSet
from semobridge_runtime.errors import InputError, ModelError
from tests.name_cases import CASES, TABLE, Case

from .conftest import C_DIR
from .contract_model import TOY_IDENTITY as TOY
from .contract_model import toy_class_set
from .test_c_classes import CModel, clib, toy  # noqa: F401  (fixtures)
from .test_c_library import lib  # noqa: F401  (fixture)

SB_EMODEL = -2
IN_FILES = [c for c in CASES if not any("\n" in n for n in c.names)]  # "\n" separates a class file's names


def test_the_table_is_the_rule() -> None:
    assert (TABLE["unicode_version"], TABLE["max_name_length"], TABLE["min_classes"]) == (
        rule.UNICODE_VERSION, rule.MAX_NAME_LENGTH, rule.MIN_CLASSES)
    assert {c.problem for c in CASES} == {None, *TABLE["problems"]}, "every problem has a case"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_python_runtime_follows_the_table(case: Case) -> None:
    if case.refused is None:
        assert rule.check_names(case.names) == case.names
        return
    with pytest.raises(InputError) as refused:
        rule.check_names(case.names)
    for fragment in case.python_says():
        assert fragment in str(refused.value), (case.case, str(refused.value))
    assert len(str(refused.value)) < 400, "a message quotes at most a part of a name"


@pytest.mark.parametrize("case", [c for c in CASES if c.problem != "count"], ids=str)
def test_names_added_one_by_one_follow_the_table(case: Case) -> None:
    """Classifier.add_class / rename_class check each new name against those before it (check_name)."""
    try:
        for i, name in enumerate(case.names):
            rule.check_name(name, case.names[:i])
    except InputError as exc:
        assert case.refused is not None, (case.case, str(exc))
        if case.problem == "duplicate":
            assert "there is already a class named" in str(exc)
    else:
        assert case.refused is None, case.case


def class_file(path: Path, names: list[str]) -> Path:
    """A class file for the toy model holding `names` as they are (not checked on the way)."""
    C = len(names)
    arrays = dict(zip(TENSORS, toy_class_set(C, TOY.embedding_dim, C)))
    arrays[NAMES_TENSOR] = np.frombuffer("\n".join(names).encode("utf-8", "surrogatepass"), np.uint8)
    meta = {"format": FORMAT, "backbone": TOY.backbone, "weights_hash": TOY.weights_hash, "bridge_hash": TOY.bridge_hash,
            "num_classes": str(C), "embedding_dim": str(TOY.embedding_dim)}
    path.write_bytes(tensorfile.encode(arrays, meta))
    return path


@pytest.fixture(scope="module")
def case_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("name_cases")
    return {c.case: class_file(folder / f"{i:02d}.classes", c.names) for i, c in enumerate(IN_FILES)}


@pytest.mark.parametrize("case", IN_FILES, ids=str)
def test_python_class_files_follow_the_table(case: Case, case_files) -> None:
    path = case_files[case.case]
    if case.refused is None:
        assert ClassSet.load(path, TOY).names == tuple(case.names)
        return
    with pytest.raises(ModelError) as refused:
        ClassSet.load(path, TOY)
    says = {"count": ["'', is empty"],  # no names: one empty name
            "surrogate": case.c_says()}.get(case.problem, case.python_says())  # not UTF-8: refused as it is read
    for fragment in says:
        assert fragment in str(refused.value), (case.case, str(refused.value))


def test_c_class_files_follow_the_table(clib: ctypes.CDLL, toy: Path, case_files) -> None:
    failures = []
    with CModel(clib, toy) as c:
        for case in IN_FILES:
            rc, message = c.set_classes(case_files[case.case])
            if case.refused is None:
                ok = rc == 0 and c.names == case.names
            else:
                ok = rc == SB_EMODEL and all(f in message for f in case.c_says()) and len(message) < 600
            if not ok:
                failures.append(f"{case.case}: rc {rc}, {message!r}")
            c.set_classes(None)
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- the Unicode tables

@pytest.fixture(scope="module")
def generator():
    sys.path.insert(0, str(C_DIR / "tools"))
    try:
        import casefold
    finally:
        sys.path.pop(0)
    return casefold


def test_c_header_is_generated_from_the_python_tables(generator) -> None:
    """runtime/c/src/casefold.h is exactly what tools/casefold.py writes from semobridge_runtime/unicode_tables.py."""
    assert generator.c_header(generator.committed()) == generator.C_TABLES.read_text(encoding="utf-8"), (
        "regenerate: python runtime/c/tools/casefold.py")
    assert generator.committed()["UNICODE_VERSION"] == rule.UNICODE_VERSION


def test_python_tables_are_this_pythons_unicode_data(generator) -> None:
    """The committed tables are what this Python's unicodedata gives: exactly, where its Unicode version is the pinned
    one; else, by Unicode's stability policy, the older version's data is a part of the newer's (only characters
    assigned in between differ), and the tables still hold on this Python."""
    ours, pinned = generator.tables(), generator.committed()
    if ours["UNICODE_VERSION"] == pinned["UNICODE_VERSION"]:
        assert generator.python_module(ours) == generator.PY_TABLES.read_text(encoding="utf-8"), (
            "regenerate: python runtime/c/tools/casefold.py")
        for cp in (*range(0xD800), *range(0xE000, 0x110000)):
            ch = chr(cp)
            assert rule.key(ch) == ch.strip().casefold(), hex(cp)
        return
    assert stability_breaks(ours, pinned) == []


def stability_breaks(a: dict, b: dict) -> list[str]:
    """What differs between two versions' tables other than Unicode's stability policy allows: the older version's
    foldings, forbidden characters and white space must hold unchanged in the newer one."""
    older, newer = sorted((a, b), key=lambda t: tuple(map(int, t["UNICODE_VERSION"].split("."))))

    def folds(t) -> dict[int, tuple[int, ...]]:
        out = {cp: (cp + d,) for first, last, d, step in t["FOLD_RUNS"] for cp in range(first, last + 1, step)}
        return {**out, **{cp: tuple(to) for cp, to in t["FOLD_MULTI"]}}

    def points(ranges) -> set[tuple[int, str]]:
        return {(cp, r[2] if len(r) > 2 else "") for r in ranges for cp in range(r[0], r[1] + 1)}

    new = folds(newer)
    breaks = [f"U+{cp:04X} folds otherwise" for cp, to in folds(older).items() if new.get(cp) != to]
    breaks += [f"U+{cp:04X} ({c}) is no longer refused" for cp, c in points(older["FORBIDDEN"]) - points(newer["FORBIDDEN"])]
    return breaks + [f"U+{cp:04X} white space changed" for cp, _ in points(older["SPACE"]) ^ points(newer["SPACE"])]


def test_stability_check_catches_a_changed_folding(generator) -> None:
    pinned = generator.committed()
    older = {**pinned, "UNICODE_VERSION": "13.0.0", "FOLD_RUNS": pinned["FOLD_RUNS"][1:]}  # fewer foldings: allowed
    assert stability_breaks(older, pinned) == []
    first = pinned["FOLD_RUNS"][0]
    changed = {**older, "FOLD_RUNS": ((first[0], first[1], first[2] + 1, first[3]), *pinned["FOLD_RUNS"][1:])}
    assert stability_breaks(changed, pinned)[:1] == ["U+0041 folds otherwise"]


def test_the_rule_does_not_follow_the_interpreter() -> None:
    """A folding Unicode 16 added (U+A7CB to U+0264) is not applied, whatever Python runs: the rule is pinned."""
    assert rule.key("\ua7cb") != rule.key("\u0264") and rule.UNICODE_VERSION == "14.0.0"

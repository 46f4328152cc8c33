"""The class-name rule's table of cases (tests/class_names.json), loaded for the tests of the library
(tests/test_class_names.py), the Python runtime and the C library (tests/runtime/test_class_name_rule.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE = json.loads((Path(__file__).with_name("class_names.json")).read_text(encoding="utf-8"))

#: problem -> what the Python messages (semobridge_runtime.names) say of it
PHRASES = {"empty": "is empty", "length": "characters, over 256", "control": "contains a control character",
           "format": "contains an invisible format character", "surrogate": "contains a lone surrogate",
           "line separator": "contains a line separator", "paragraph separator": "contains a paragraph separator",
           "count": "a classifier needs at least"}


@dataclass(frozen=True)
class Case:
    case: str
    names: list[str]
    refused: dict[str, Any] | None

    def __str__(self) -> str:
        return self.case

    @property
    def problem(self) -> str | None:
        return self.refused and self.refused["problem"]

    def python_says(self) -> list[str]:
        """What the Python rule's message for a whole list (check_names) contains."""
        r = self.refused
        if r["problem"] == "duplicate":
            return [f"(class {r['class']} repeats class {r['of']}, "]
        return [PHRASES[r["problem"]]] + ([] if r["class"] is None else [f"class name {r['class']}, "])

    def c_says(self) -> list[str]:
        """What the C library's message for a class file holding these names contains."""
        r = self.refused
        if r["problem"] == "duplicate":
            return [f"class name {r['class']}, ", f", repeats class {r['of']}, "]
        if r["problem"] == "count":
            return ["has 0 classes"]
        if r["problem"] == "surrogate":  # refused as it is read: a surrogate is not UTF-8
            return ["has unusable class names (not UTF-8 at byte"]
        return [f"class name {r['class']}, ", PHRASES[r["problem"]]]


def _name(value: str | dict[str, Any]) -> str:
    return value if isinstance(value, str) else value["repeat"] * value["times"]


CASES = [Case(c["case"], [_name(n) for n in c["names"]], c["refused"]) for c in TABLE["cases"]]

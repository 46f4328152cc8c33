"""The class-name rule (docs/classes.md, "Class names"): written here once, used by the library
(semobridge.validate.class_names), the runtime's class sets, model metadata and class files; the C
library follows it through tables generated from the same data (runtime/c/tools/casefold.py), and
tests/class_names.json holds all three to the same cases.

A class name is one line of visible text: not empty or only white space, at most MAX_NAME_LENGTH
characters, with no control character (Cc), invisible format character (Cf, except ZWNJ/ZWJ),
lone surrogate (Cs), line or paragraph separator (Zl, Zp). Names are compared ignoring surrounding
white space and case (full case folding, as str.casefold), with the Unicode data of
unicode_tables.py, pinned to one Unicode version whatever the Python's. A class set has at least
MIN_CLASSES names.
"""

from __future__ import annotations

import bisect
import re
from typing import Any, Iterable

from . import unicode_tables as _t
from .errors import InputError

MAX_NAME_LENGTH = 256  # characters (code points)
MIN_CLASSES = 1  # in a class set; fitting needs more (semobridge.validate.MIN_FIT_CLASSES)
UNICODE_VERSION = _t.UNICODE_VERSION

_SPACE = "".join(chr(c) for a, b in _t.SPACE for c in range(a, b + 1))
_FORBIDDEN = re.compile("[" + "".join(f"\\U{a:08X}-\\U{b:08X}" for a, b, _ in _t.FORBIDDEN) + "]")
_FORBIDDEN_FIRST = [a for a, _, _ in _t.FORBIDDEN]
_FOLD: dict[int, str] = {cp: chr(cp + delta) for a, b, delta, step in _t.FOLD_RUNS for cp in range(a, b + 1, step)}
_FOLD.update({cp: "".join(map(chr, to)) for cp, to in _t.FOLD_MULTI})


def quoted(name: str, limit: int = 40) -> str:
    """`name` for a message: repr (so invisible characters show as escapes), cut after `limit` characters."""
    return repr(name[:limit]) + ("..." if len(name) > limit else "")


def problem(name: str) -> str | None:
    """What makes `name` unusable as a class name ("is empty", "contains a control character (U+0009)", ...), or None."""
    if not name.strip(_SPACE):
        return "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"has {len(name)} characters, over {MAX_NAME_LENGTH}"
    bad = _FORBIDDEN.search(name)
    if bad is not None:
        cp = ord(bad.group())
        kind = _t.KINDS[_t.FORBIDDEN[bisect.bisect_right(_FORBIDDEN_FIRST, cp) - 1][2]]
        return f"contains {kind} (U+{cp:04X}); class names are one line of visible text"
    return None


def key(name: str) -> str:
    """The comparison key: without surrounding white space, case-folded (two names clash when their keys are equal)."""
    stripped = name.strip(_SPACE)
    return stripped.lower() if stripped.isascii() else stripped.translate(_FOLD)  # ASCII: A-Z fold to a-z, nothing else


def _text(name: Any, what: str) -> str:
    if not isinstance(name, str):
        raise InputError(f"{what} must be a string, not {type(name).__name__}")
    return name


def check_name(name: Any, taken: Iterable[str] = ()) -> str:
    """One new class name (an added or renamed class), usable and not clashing with any of `taken`."""
    name = _text(name, "a class name")
    found = problem(name)
    if found:
        raise InputError(f"class name {quoted(name)} {found}", hint="give the class a name of one line of visible text")
    clash = next((t for t in taken if key(t) == key(name)), None)
    if clash is not None:
        raise InputError(f"there is already a class named {quoted(clash)}" + ("" if clash == name else
                         " (names are compared ignoring case and surrounding white space, as prompts are lower-cased)"),
                         hint="choose another name, or remove that class first")
    return name


def check_names(names: Iterable[Any], source: str = "the class names", minimum: int = MIN_CLASSES) -> list[str]:
    """A whole list of class names (a class set, a model's, a data set's): each usable, no two clashing, at least
    `minimum` of them. A name's own problem is reported before any clash, and of the clashes the first name that
    repeats an earlier one (as the C library reports them), naming the classes by index."""
    names = list(names)
    for i, name in enumerate(names):  # every name on its own first, then the clashes (as the C library)
        found = problem(_text(name, f"{source}: class {i}'s name"))
        if found:
            raise InputError(f"{source}: class name {i}, {quoted(name)}, {found}",
                             hint="give every class a name of one line of visible text")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        j = seen.setdefault(key(name), i)
        if j != i:
            raise InputError(f"{source}: duplicate class name {quoted(name)} (class {i} repeats class {j}, "
                             f"{quoted(names[j])}, ignoring case and surrounding white space)",
                             hint="class names must be unique")
    if len(names) < minimum:
        raise InputError(f"{source}: {len(names)} class(es); a classifier needs at least {minimum}")
    return names

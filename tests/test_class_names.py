"""The library's class-name checks (semobridge.validate.class_names: data sets, feature files, model files) are the
runtime's one rule (semobridge_runtime.names), held to the table of cases the runtime and C tests use
(tests/class_names.json); a fit needs MIN_FIT_CLASSES of them."""

from __future__ import annotations

import pytest

from semobridge import validate
from semobridge.errors import InputError
from semobridge_runtime import names as rule

from .name_cases import CASES, TABLE, Case


def test_the_library_calls_the_runtime_rule() -> None:
    assert validate.class_names is rule.check_names
    assert validate.MIN_FIT_CLASSES == TABLE["min_fit_classes"] > rule.MIN_CLASSES == TABLE["min_classes"]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_library_follows_the_table(case: Case) -> None:
    """As a class set (at least one class), and for a fit (at least two)."""
    if case.refused is None:
        assert validate.class_names(case.names, "the classes", rule.MIN_CLASSES) == case.names
    else:
        with pytest.raises(InputError) as refused:
            validate.class_names(case.names, "the classes", rule.MIN_CLASSES)
        assert all(fragment in str(refused.value) for fragment in case.python_says()), str(refused.value)
    if case.refused is None and len(case.names) < validate.MIN_FIT_CLASSES:
        with pytest.raises(InputError, match=f"a classifier needs at least {validate.MIN_FIT_CLASSES}"):
            validate.class_names(case.names, "the classes", validate.MIN_FIT_CLASSES)

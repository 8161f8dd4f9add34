"""The error tree in ``exceptions.py``'s docstring is the real one, and each class's meaning
(reason, retry, HTTP status, exit code) is what its users read instead of matching messages."""

from __future__ import annotations

import importlib
import pkgutil
import re

import fx_operator
import pytest
from fx_operator import exceptions
from fx_operator.domain.conditions import Reason
from fx_operator.exceptions import FxError, Problem, StoreError, ValidationError

_ROW = re.compile(r"^    (?P<indent>(?:│   |    )*)(?P<branch>├── |└── )?(?P<name>[A-Z]\w+)")


def _every_class() -> dict[str, type[FxError]]:
    for module in pkgutil.walk_packages(fx_operator.__path__, "fx_operator."):
        if ".migrations" not in module.name and not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found: dict[str, type[FxError]] = {}
    pending: list[type[FxError]] = [FxError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def _documented_parents() -> dict[str, str | None]:
    """Each class in the docstring's tree, with its parent there."""
    doc = exceptions.__doc__ or ""
    tree = doc[doc.index("::\n\n") + 4:].split("\n\n")[0].splitlines()
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in tree:
        match = _ROW.match(line)
        assert match, line
        depth = len(match.group("indent")) // 4 + 1 if match.group("branch") else 0
        del stack[depth:]
        parents[match.group("name")] = stack[-1] if stack else None
        stack.append(match.group("name"))
    return parents


def test_the_docstring_tree_is_the_class_tree() -> None:
    classes = _every_class()
    documented = _documented_parents()
    assert set(documented) == set(classes), "add or remove them in exceptions.py's docstring"
    for name, cls in classes.items():
        parent = documented[name]
        assert parent == (None if cls is FxError else cls.__base__.__name__), name


@pytest.mark.parametrize("cls", sorted(_every_class().values(), key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_each_class_says_what_it_means(cls: type[FxError]) -> None:
    assert cls.reason is None or isinstance(cls.reason, Reason)
    assert cls.retry_after is None or cls.retry_after > 0
    assert 400 <= cls.http_status <= 599
    assert cls.exit_code in (exceptions.EXIT_FAILURE, exceptions.EXIT_BAD_INPUT)


def test_bad_input_is_a_400_and_exit_2_with_its_problem_s_reason() -> None:
    error = ValidationError([Problem("spec.x", "wrong"),
                             Problem("spec.entrypoint", "missing", Reason.NO_ENTRYPOINT)])
    assert (error.http_status, error.exit_code, error.reason) == (
        400, exceptions.EXIT_BAD_INPUT, Reason.NO_ENTRYPOINT)
    assert ValidationError(Problem("spec.x", "wrong")).reason is None


def test_a_store_failure_may_be_retried_and_says_so() -> None:
    error = StoreError("connection refused")
    assert error.retry_after and error.http_status == 503
    assert error.reason is Reason.STORE_UNAVAILABLE
    assert error.after_retries() == "the secret store kept failing: connection refused"

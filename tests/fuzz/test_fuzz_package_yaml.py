"""Fuzz target: ``package.yaml`` (``domain.package_spec.parse_package_spec``) and the loader that
reads it from a package folder (``services.local_run.load_package_folder``), and a Package
resource's spec (``package_definition``).

Property: any text either parses to a spec whose params and config are plain JSON (finite numbers,
UTF-8 text, no aliases, at most ``MAX_DEPTH`` levels: what a run's bundle and the store can hold)
or raises ``ValidationError`` (the loader also ``RunError``) with a printable message; never
another exception, never a hang.

What the targets found once (and issue 20 item 9) is kept as explicit inputs at the end.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fx_operator.domain.nesting import too_deep
from fx_operator.domain.package_definition import package_definition
from fx_operator.domain.package_spec import parse_package_spec
from fx_operator.exceptions import RunError, ValidationError
from fx_operator.services.local_run import load_package_folder
from hypothesis import event, example, given
from hypothesis import strategies as st

from fuzz import strategies as fz
from fuzz.checks import assert_plain_json, message_is_clean
from fuzz.profiles import fuzz_settings

FIELDS = ["name", "project", "entrypoint", "params", "config", "compat", "timeout", "other"]
#: YAML a tenant might write for a value: JSON (YAML's flow style reads it), YAML's own types
#: and tags, anchors and aliases, and nesting at every limit.
YAML_VALUES = st.one_of(
    # PyYAML takes seconds to give up on thousands of levels: the random runs stay near the
    # project's limit of 32, the explicit examples go beyond it.
    fz.value_tokens(depths=(31, 32, 33, 34, 200)),
    st.sampled_from([
        "2024-01-01", "2024-01-01T10:00:00Z", ".nan", ".inf", "-.inf", "0x1F", "0o17", "1_000",
        "~", "yes", "no", "!!binary aGVsbG8=", "!!set {a, b}", "!!omap [{a: 1}]",
        "!!python/object:os.system {}", "!!str 1", "!!int x", "!!float x", "&a [*a]",
        "&a {k: *a}", "{<<: {a: 1}, b: 2}", "{? [1]: 2}", "{[1, 2]: 3}", "{1: 2}", "{null: 1}",
        '"\\ud800"', '"\\x00"', "'a\tb'", "|\n  block\n", "[1, 2", "{a: 1, a: 2}", "*undefined",
    ]),
    st.sampled_from([("9", 4_301), ("9", 4_300), ("[", 33)]).map(
        lambda spec: spec[0] * spec[1] + ("]" * spec[1] if spec[0] == "[" else "")),
    fz.TEXT,
)
_BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)))
DOCUMENTS = st.one_of(
    st.lists(st.tuples(st.sampled_from(FIELDS) | fz.TEXT, YAML_VALUES), max_size=5).map(
        lambda pairs: "".join(f"{key}: {value}\n" for key, value in pairs)),
    st.lists(st.tuples(st.sampled_from(FIELDS), YAML_VALUES), max_size=5).map(
        lambda pairs: "{" + ", ".join(f"{key}: {value}" for key, value in pairs) + "}"),
    fz.TEXT,
)


def _strict(text: str) -> None:
    """The property, with no known bug stepped over."""
    try:
        spec = parse_package_spec(text)
    except ValidationError as e:
        message_is_clean(e)
        return
    assert_plain_json({"params": spec.params, "config": spec.config})


def _parses_or_refuses(text: str) -> None:
    try:
        spec = parse_package_spec(text)
    except ValidationError as e:
        message_is_clean(e)
        event("refused")
        return
    event("accepted")
    assert_plain_json({"params": spec.params, "config": spec.config})
    if spec.timeout is not None:
        assert math.isfinite(spec.timeout) and spec.timeout > 0


@fuzz_settings(300)
@given(DOCUMENTS)
@example("name: etl\nparams: {day: monday}\ntimeout: 60\n")
@example(_BOMB + "name: etl\n")
@example("params:\n  " + _BOMB.replace("\n", "\n  ").rstrip() + "\n")
@example("name: !!python/object/apply:os.system ['true']\n")
@example("\x00")
@example("\ufeffname: etl\n")
def test_package_yaml_text(text: str) -> None:
    _parses_or_refuses(text)


@fuzz_settings(100)
@given(st.one_of(DOCUMENTS.map(fz.encode), fz.mutated(DOCUMENTS.map(fz.encode)), fz.RAW_BYTES))
def test_package_folder_loader(raw: bytes) -> None:
    _strict_load(raw)


# --- a Package resource's spec, as the API server hands it over (JSON) ---------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | fz.TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(fz.TEXT, children,
                                                                      max_size=3),
    max_leaves=8,
)
_SCRIPTS = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["main.py", "a.py", "x"])
                                           | fz.TEXT, "content": st.text(max_size=20)}),
                    max_size=3)
PACKAGE_SPECS = st.fixed_dictionaries({}, optional={
    "scripts": _SCRIPTS | _JSON, "entrypoint": st.sampled_from(["main.py", "a.py"]) | _JSON,
    "image": _JSON, "params": _JSON, "config": _JSON, "resources": _JSON, "compat": _JSON,
    "timeoutSeconds": _JSON,
})


def _defined_or_refused(spec: dict[str, Any]) -> None:
    try:
        definition = package_definition("etl", spec)
    except TypeError:
        if isinstance(spec.get("entrypoint"), str):
            raise
        event("known bug: an entrypoint that is not a string raises TypeError")
        return
    except ValidationError as e:
        message_is_clean(e)
        event("refused")
        return
    event("accepted")
    assert definition.entrypoint in definition.scripts
    assert_plain_json({"params": definition.params, "config": definition.config}, max_depth=33)


@fuzz_settings(150)
@given(PACKAGE_SPECS)
@example({"scripts": [{"name": "main.py", "content": ""}],
          "params": {"k": fz.json_nested(40)}})
def test_package_resource_spec(spec: dict[str, Any]) -> None:
    _defined_or_refused(spec)


def _strict_definition(spec: dict[str, Any]) -> None:
    try:
        package_definition("etl", spec)
    except ValidationError as e:
        message_is_clean(e)


def _strict_load(raw: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="fx-fuzz-") as folder:
        path = Path(folder) / "etl"
        path.mkdir()
        (path / "main.py").write_text("print('hi')\n")
        (path / "package.yaml").write_bytes(raw)
        try:
            load_package_folder(path)
        except (ValidationError, RunError) as e:
            message_is_clean(e)


# --- what the targets above found (and issue 20 item 9): each input refused by name now ---------

FOUND: list[tuple[str, Callable[[Any], None], Any]] = [
    ("deep flow nesting (RecursionError)", _strict,
     "params: {k: " + "[" * 5_000 + "]" * 5_000 + "}\n"),
    ("a YAML date in params", _strict, "params: {day: 2024-01-01}\n"),
    (".nan in params", _strict, "params: {x: .nan}\n"),
    ("!!int on an empty scalar (IndexError)", _strict, "timeout: !!int\n"),
    ("!!float ; (ValueError)", _strict, "timeout: !!float ;\n"),
    ("!!int 08 (ValueError)", _strict, "name: !!int 08\n"),
    ("4,301 digits (int/str conversion limit)", _strict, "params: {n: " + "9" * 4_301 + "}\n"),
    ("a lone surrogate in params", _strict, 'params: {s: "\\ud800"}\n'),
    ("an alias cycle in params", _strict, "params: &a {k: *a}\n"),
    ("nine levels of aliases (387M leaves)", _strict,
     "params:\n  " + _BOMB.replace("\n", "\n  ").rstrip() + "\n"),
    ("package.yaml not UTF-8", _strict_load, b"name: \xff\n"),
    ("a non-string entrypoint (TypeError)", _strict_definition,
     {"scripts": [{"name": "main.py", "content": ""}], "entrypoint": []}),
]


@pytest.mark.parametrize(("check", "value"), [(c, v) for _, c, v in FOUND],
                         ids=[what for what, _, _ in FOUND])
def test_what_fuzzing_found_is_refused_by_name(check: Callable[[Any], None], value: Any) -> None:
    check(value)


# --- the nesting check on what YAML builds (aliases share and loop containers) -------------------

def _measured(text: str) -> None:
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError, IndexError):
        return  # PyYAML's own refusals (and the known bugs above): nothing to measure
    problem = too_deep(value)
    assert problem is None or problem.strip()


@fuzz_settings(150)
@given(DOCUMENTS)
@example("params:\n  " + _BOMB.replace("\n", "\n  ").rstrip() + "\n")  # hung before: 9**9 paths
@example("&a [*a]")  # looped forever before: a list inside itself
@example("&a {k: [1, {j: *a}]}")
def test_nesting_of_yaml_values(text: str) -> None:
    _measured(text)

"""package.yaml holds JSON values only: what YAML adds is kept as text or refused by field.

Before, a date in params reached the bundle and failed there with a traceback, ``.nan`` and
``.inf`` were run with, and 5,000 nested levels raised ``RecursionError`` in the YAML composer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fx_operator.cli.main import main
from fx_operator.cli.run import _params
from fx_operator.domain.nesting import MAX_DEPTH
from fx_operator.domain.package_spec import parse_package_spec
from fx_operator.exceptions import EXIT_BAD_INPUT, ValidationError


def _refused(text: str) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        parse_package_spec(text)
    return {p.where: p.what for p in caught.value.problems}


def test_unquoted_dates_stay_text_as_kubernetes_reads_them() -> None:
    spec = parse_package_spec("params: {day: 2024-01-01, at: 2001-12-14t21:59:43.10-05:00}\n"
                              "config: {since: [2023-06-30]}\nname: 2024-01-01\n")
    assert spec.params == {"day": "2024-01-01", "at": "2001-12-14t21:59:43.10-05:00"}
    assert spec.config == {"since": ["2023-06-30"]}
    assert spec.name == "2024-01-01"
    json.dumps(spec.model_dump(), allow_nan=False)  # what the bundle will hold


def test_a_date_where_no_field_is_expected_names_the_field() -> None:
    assert _refused("version: 2024-01-01")["version"].startswith("unknown field")


@pytest.mark.parametrize(("text", "where", "what"), [
    ("params: {x: .nan}", "params.x", "NaN"),
    ("params: {x: .inf}", "params.x", "infinity"),
    ("config: {limits: [1, -.inf]}", "config.limits[1]", "infinity"),
    ("params: {x: 1.0e+400}", "params.x", "infinity"),
    ("timeout: .nan", "timeout", "NaN"),
    ("params: {x: !!timestamp 2024-01-01}", "params.x", "a date"),
    ("params: {x: !!binary aGVsbG8=}", "params.x", "binary data"),
    ("params: {x: !!set {a, b}}", "params.x", "a set"),
    ("params: {x: !!omap [a: 1]}", "params.x[0]", "ordered pair"),
    ("params: {1: one}", "params", "the key 1 is not text"),
    ("params: {x: 1" + "0" * 5000 + "}", "params.x", "5001 digits"),
])
def test_values_json_cannot_carry_are_refused_by_field(text: str, where: str, what: str) -> None:
    problems = _refused(text)
    assert what in problems[where], problems


@pytest.mark.parametrize("text", [
    "params: " + "[" * 5000 + "]" * 5000,
    "params:\n" + "".join("  " * level + "a:\n" for level in range(1, 5000)),
    "params: " + "{a: " * 5000 + "1" + "}" * 5000,
])
def test_deep_nesting_is_refused_without_recursing(text: str) -> None:
    problems = _refused(text)
    assert list(problems) == ["params"]
    assert f"at most {MAX_DEPTH}" in problems["params"]


def test_the_deepest_allowed_nesting_is_accepted_and_one_more_is_refused() -> None:
    deepest = "[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH
    assert parse_package_spec(f"config: {{a: {deepest[1:-1]}}}").config
    assert "config" in _refused(f"config: {{a: {deepest}}}")
    assert "config" in _refused(f"config: {{a: {'[' * MAX_DEPTH + ']' * MAX_DEPTH}}}")


def test_aliases_cannot_nest_deeper_or_grow_without_bound() -> None:
    half = "[" * 30 + "1" + "]" * 30
    deeper = f"params:\n  a: &d {half}\n  b: {'[' * 30}*d{']' * 30}\n"
    assert "61 levels" in _refused(deeper)["params"]
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    laughs = "params:\n" + "\n".join(f"  {line}" for line in lines)
    assert "more than 100000 values" in _refused(laughs)["params"]


def test_fxctl_run_says_so_in_one_line_with_the_usage_exit_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FX_HOME", str(tmp_path / "home"))
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "main.py").write_text("print('never run')\n")
    for text in ["params: {x: .nan}", "params: " + "[" * 5000 + "]" * 5000]:
        (folder / "package.yaml").write_text(text)
        with pytest.raises(SystemExit) as exited:
            main(["run", str(folder)])
        assert exited.value.code == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert err.startswith(f"error: invalid {folder / 'package.yaml'}: params")
        assert err.count("\n") == 1 and "Traceback" not in err


def test_a_package_yaml_that_is_not_utf8_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FX_HOME", str(tmp_path / "home"))
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "main.py").write_text("print('never run')\n")
    (folder / "package.yaml").write_bytes(b'params: {a: "\xff"}\n')
    with pytest.raises(SystemExit) as exited:
        main(["run", str(folder)])
    assert exited.value.code == EXIT_BAD_INPUT
    assert capsys.readouterr().err == (f"error: invalid {folder / 'package.yaml'}: not UTF-8 "
                                       "text (byte 13)\n")


def test_run_params_on_the_command_line_are_strict_json_and_bounded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _params(("a=NaN", "b=[1,-Infinity]", "c=2", 'd={"e": [true]}', "f=text")) == {
        "a": "NaN", "b": "[1,-Infinity]", "c": 2, "d": {"e": [True]}, "f": "text"}
    with pytest.raises(SystemExit) as exited:
        main(["run", str(tmp_path), "--param", "x=" + "[" * 5000 + "]" * 5000])
    assert exited.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "--param: x: nested more than 32 levels deep" in err and "Traceback" not in err

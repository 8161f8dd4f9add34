"""The run's bundle as a type (``fx_ef.run_bundle``): what the one writer builds, the one reader
reads back; every refusal names its field and never quotes a value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fx_ef import contract, executor
from fx_ef.bundle import new_run_key, open_bundle, seal_bundle
from fx_ef.run_bundle import (
    BundleChannel,
    BundlePackage,
    FieldError,
    RunBundle,
    UnknownBundleFormat,
)

SECRET = "s3cr3t-value-never-shown"


def _built(**changes: Any) -> RunBundle:
    arguments: dict[str, Any] = {
        "run_id": "run-1", "project": "team-a", "package": "etl", "entrypoint": "main.py",
        "compat": None, "params": {"day": "monday"}, "config": {"region": "eu"},
        "secrets": {"DB_PASS": SECRET, "EMPTY": ""}, "scopes": {"DB_PASS": "package",
                                                              "EMPTY": "platform"},
        "channel": BundleChannel("https://broker:8443", token_file="/t", ca_file="/c"),
        "allow_platform_write": False, **changes}
    return RunBundle.build(**arguments)


def _document(**changes: Any) -> dict[str, Any]:
    return {**_built().to_dict(), **changes}


def test_the_writer_builds_the_documented_object_in_its_order() -> None:
    document = _built().to_dict()
    assert list(document) == ["format", "run_id", "package", "entrypoint", "compat", "params",
                              "config", "secrets", "scopes", "channel", "allow_platform_write"]
    assert document["format"] == contract.BUNDLE_FORMAT
    assert document["package"] == {"name": "etl", "id": "team-a/etl", "project": "team-a"}
    assert document["channel"] == {"url": "https://broker:8443", "token": None,
                                   "token_file": "/t", "ca_file": "/c"}


@pytest.mark.parametrize("channel", [
    None, BundleChannel("unix:/tmp/fx/channel", token="t0k"),
    BundleChannel("https://broker:8443", token_file="/t", ca_file="/c")])
def test_json_round_trip(channel: BundleChannel | None) -> None:
    bundle = _built(channel=channel, compat="ferris", allow_platform_write=True)
    again = RunBundle.from_json(bundle.to_json())
    assert again == bundle
    assert isinstance(again, RunBundle) and isinstance(again.package, BundlePackage)
    assert again.to_json() == bundle.to_json()


def test_sealed_text_is_the_writers_text() -> None:
    bundle, key = _built(), new_run_key()
    opened = open_bundle(seal_bundle(bundle, key), key, "run-1")
    assert opened.decode() == bundle.to_json()
    assert RunBundle.from_json(opened) == bundle


def test_the_reader_fills_what_a_bundle_may_leave_out() -> None:
    bundle = RunBundle.from_dict({"format": 1, "run_id": "r",
                                  "package": {"name": "n", "id": "p/n"}})
    assert bundle == RunBundle("r", BundlePackage("n", "p/n", None), None, None, {}, {}, {}, {},
                               None, False)


@pytest.mark.parametrize("found", [2, 0, None, "1", 1.0, True, [1]])
def test_an_unknown_format_is_refused(found: Any) -> None:
    with pytest.raises(UnknownBundleFormat) as caught:
        RunBundle.from_dict(_document(format=found))
    assert caught.value.field == "format"
    assert f"this fx_ef reads format {contract.BUNDLE_FORMAT}" in str(caught.value)
    assert caught.value.located("the bundle /b").startswith("the bundle /b has format ")


BAD_FIELDS: list[tuple[dict[str, Any], str, str]] = [
    ({"run_id": 31337421}, "run_id", "must be a non-empty string, found a number"),
    ({"run_id": ""}, "run_id", "must be a non-empty string"),
    ({"package": "etl"}, "package", "must be an object, found a string"),
    ({"package": None}, "package", "must be an object, found nothing"),
    ({"package": {"id": "a/b"}}, "package.name", "must be a non-empty string"),
    ({"package": {"name": "a", "id": 7}}, "package.id", "must be a non-empty string"),
    ({"package": {"name": "a", "id": "a/b", "project": 3}}, "package.project",
     "must be a string or null"),
    ({"entrypoint": ["main.py"]}, "entrypoint", "must be a string or null, found an array"),
    ({"compat": 1}, "compat", "must be a string or null, found a number"),
    ({"params": "x"}, "params", "must be an object, found a string"),
    ({"config": []}, "config", "must be an object, found an array"),
    ({"secrets": [SECRET]}, "secrets", "must be an object, found an array"),
    ({"scopes": "package"}, "scopes", "must be an object"),
    ({"scopes": {"DB_PASS": "service"}}, "scopes.DB_PASS",
     "is 'service', expected one of package, project, platform"),
    ({"scopes": {"DB_PASS": [SECRET]}}, "scopes.DB_PASS", "is an array"),
    ({"channel": "unix:/x"}, "channel", "must be an object or null, not a string"),
    ({"channel": {"token": "t"}}, "channel.url", "must be a non-empty string"),
    ({"channel": {"url": "ftp://x"}}, "channel.url", "must be unix:/PATH or https://HOST:PORT"),
    ({"channel": {"url": "unix:/x", "token": 5}}, "channel.token", "must be a string or null"),
    ({"channel": {"url": "unix:/x", "token_file": {}}}, "channel.token_file",
     "must be a string or null"),
    ({"channel": {"url": "unix:/x", "ca_file": False}}, "channel.ca_file",
     "must be a string or null"),
    ({"allow_platform_write": "yes"}, "allow_platform_write", "must be true or false"),
    ({"allow_platform_write": None}, "allow_platform_write", "must be true or false"),
]


@pytest.mark.parametrize(("changes", "field", "problem"), BAD_FIELDS,
                         ids=[field for _, field, _ in BAD_FIELDS])
def test_each_refusal_names_its_field(changes: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(FieldError) as caught:
        RunBundle.from_json(json.dumps(_document(**changes)))
    error = caught.value
    assert error.field == field
    assert str(error).startswith(f"{field} ")
    assert problem in str(error)
    assert SECRET not in str(error) and "31337421" not in str(error)
    assert error.located("the bundle /b") == f"the bundle /b: {error}"
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(("raw", "problem"), [
    ("{", "is not valid JSON"), (b"\xff", "is not valid JSON"),
    ("[1]", "must hold a JSON object, not an array"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_a_document_that_is_no_bundle_at_all(raw: str | bytes, problem: str) -> None:
    with pytest.raises(FieldError, match=problem) as caught:
        RunBundle.from_json(raw)
    assert caught.value.field == ""
    assert caught.value.located("the bundle /b").startswith("the bundle /b ")


def test_the_writer_refuses_what_the_reader_would() -> None:
    with pytest.raises(FieldError) as caught:
        _built(scopes={"DB_PASS": "service"})
    assert caught.value.field == "scopes.DB_PASS"
    with pytest.raises(FieldError, match=r"channel\.url"):
        _built(channel=BundleChannel(""))
    with pytest.raises(FieldError, match="run_id"):
        _built(run_id="")


def test_the_bundle_is_immutable_and_its_repr_shows_no_secret_nor_token() -> None:
    bundle = _built(channel=BundleChannel("unix:/x", token="t0k3n-private"))
    with pytest.raises(AttributeError):
        bundle.run_id = "run-2"  # type: ignore[misc]
    shown = repr(bundle) + repr(bundle.channel) + str(bundle)
    assert SECRET not in shown and "t0k3n-private" not in shown
    assert "run-1" in shown and "<2 hidden>" in shown


@pytest.mark.parametrize(("changes", "code", "message"), [
    ({"format": 99}, executor.EXIT_USAGE, "is not of format 1"),
    ({"run_id": 7}, executor.EXIT_USAGE, ": run_id must be a non-empty string, found a number"),
    ({"scopes": {"DB_PASS": "service"}}, executor.EXIT_USAGE, ": scopes.DB_PASS is 'service'"),
    ({"entrypoint": None}, executor.EXIT_NO_ENTRYPOINT, "the bundle names no entrypoint"),
    ({"entrypoint": 3}, executor.EXIT_NO_ENTRYPOINT, "the bundle names no entrypoint"),
])
def test_the_executor_reads_through_the_reader(tmp_path: Path, changes: dict[str, Any],
                                               code: int, message: str) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(_document(**changes)))
    with pytest.raises(executor.ExecutorError) as caught:
        executor.load_plan(str(path), str(tmp_path))
    assert caught.value.exit_code == code
    assert message in str(caught.value)
    assert SECRET not in str(caught.value)


def test_the_executors_plan_carries_the_read_bundle(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("pass\n")
    path = tmp_path / "bundle.json"
    path.write_text(_built(compat="ferris").to_json())
    plan = executor.load_plan(str(path), str(tmp_path))
    assert plan.bundle == _built(compat="ferris")
    assert json.loads(plan.argv[1]) == {"day": "monday", "package_name": "etl",
                                        "package_id": "team-a/etl", "execution_id": "run-1",
                                        "secrets": {"DB_PASS": SECRET, "EMPTY": ""}}

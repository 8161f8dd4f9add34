"""fx_ef's context in a run: reads the bundle once, lazily, and says clearly what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fx_ef
import fx_ef._rundata
from fx_ef import Context, NoRunContextError, RunDataError

SECRETS: dict[str, Any] = {
    "DB_NAME": "test_db",
    "DB_PASS": "supersecretpas$",
    "STRUCT": {"somekey": "someval", "list": [1, 2, {"deep": "x"}]},
    "EMPTY_STRING": "",
    "EMPTY_OBJECT": {},
    "ZERO": 0,
    "FALSE": False,
}
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def bundle(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format": 1,
        "run_id": "run-42",
        "package": {"name": "etl", "id": "default/etl", "project": "default"},
        "entrypoint": "main.py",
        "compat": None,
        "params": {"limit": 10, "package_name": "spoofed"},
        "config": {"region": "eu"},
        "secrets": dict(SECRETS),
        "scopes": dict.fromkeys(SECRETS, "package"),
        "channel": None,
        "allow_platform_write": False,
    }
    document.update(overrides)
    return document


def write_bundle(path: Path, document: dict[str, Any] | str) -> Path:
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def bundle_context(tmp_path: Path, **overrides: Any) -> Context:
    path = write_bundle(tmp_path / "bundle.json", bundle(**overrides))
    return Context(environ={"FX_BUNDLE": str(path)})


# --- reading ---------------------------------------------------------------------------------


def test_get_returns_the_resolved_values(tmp_path: Path) -> None:
    context = bundle_context(tmp_path)
    assert context.secrets.get("DB_NAME") == "test_db"
    assert context.secrets.get("DB_PASS") == "supersecretpas$"
    assert context.secrets.get("STRUCT") == SECRETS["STRUCT"]
    assert context.secrets.get("MISSING") is None


@pytest.mark.parametrize("name", ["EMPTY_STRING", "EMPTY_OBJECT", "ZERO", "FALSE"])
def test_an_empty_value_is_a_value(tmp_path: Path, name: str) -> None:
    value = bundle_context(tmp_path).secrets.get(name)
    assert value == SECRETS[name]
    assert value is not None
    assert type(value) is type(SECRETS[name])


def test_a_structured_value_comes_back_as_a_copy(tmp_path: Path) -> None:
    context = bundle_context(tmp_path)
    first = context.secrets.get("STRUCT")
    first["somekey"] = "changed"
    first["list"][2]["deep"] = "changed"
    assert context.secrets.get("STRUCT") == SECRETS["STRUCT"]


def test_params_config_and_package(tmp_path: Path) -> None:
    context = bundle_context(tmp_path)
    assert context.params is context.parameters
    assert context.params.get("limit") == 10
    # Derived from the bundle: a run's own param cannot pretend to be another package.
    assert context.params.get("package_name") == "etl"
    assert context.params.get("package_id") == "default/etl"
    assert context.params.get("execution_id") == "run-42"
    assert context.config.get("region") == "eu"
    assert context.config.get("missing") is None
    assert (context.package.name, context.package.id) == ("etl", "default/etl")
    assert context.package.project == "default"
    assert context.is_local_env is False


def test_missing_optional_fields_read_as_empty(tmp_path: Path) -> None:
    document = bundle()
    for key in ("params", "config", "secrets", "scopes", "channel", "allow_platform_write"):
        del document[key]
    path = write_bundle(tmp_path / "bundle.json", document)
    context = Context(environ={"FX_BUNDLE": str(path)})
    assert context.secrets.get("DB_PASS") is None
    assert context.config == {}
    assert context.params == {"package_name": "etl", "package_id": "default/etl",
                              "execution_id": "run-42"}


def test_the_bundle_is_read_once_and_steady_state_is_cached(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    loads = []
    real_load = fx_ef._rundata.load

    def counting_load(*args: Any) -> Any:
        loads.append(args)
        return real_load(*args)

    monkeypatch.setattr(fx_ef._rundata, "load", counting_load)
    context = bundle_context(tmp_path)
    assert loads == []  # building a context reads nothing
    assert context.secrets.get("DB_PASS") == "supersecretpas$"
    (tmp_path / "bundle.json").unlink()  # a re-read would now fail
    for _ in range(3):
        assert context.secrets.get("DB_PASS") == "supersecretpas$"
        assert context.params.get("package_name") == "etl"
        assert context.package.name == "etl"
    assert len(loads) == 1


def test_reading_params_first_also_fills_the_secrets_cache(tmp_path: Path) -> None:
    context = bundle_context(tmp_path)
    assert context.params.get("limit") == 10
    (tmp_path / "bundle.json").unlink()
    assert context.secrets.get("DB_NAME") == "test_db"


def test_reset_forgets_what_was_read(tmp_path: Path) -> None:
    context = bundle_context(tmp_path)
    assert context.secrets.get("DB_NAME") == "test_db"
    write_bundle(tmp_path / "bundle.json", bundle(secrets={"DB_NAME": "other"}))
    assert context.secrets.get("DB_NAME") == "test_db"
    context._reset()
    assert context.secrets.get("DB_NAME") == "other"


def test_repr_shows_no_value(tmp_path: Path) -> None:
    context = bundle_context(tmp_path)
    assert "not loaded" in repr(context)
    context.secrets.get("DB_PASS")
    for text in (repr(context), repr(context.secrets), repr(context.state)):
        assert "supersecretpas$" not in text


def test_the_bundle_wins_over_local_mode(tmp_path: Path) -> None:
    path = write_bundle(tmp_path / "bundle.json", bundle())
    (tmp_path / "ef_env.json").write_text(json.dumps({"secrets": {"DB_NAME": "local"}}))
    context = Context(environ={"FX_BUNDLE": str(path), "EF_ENV": "local"}, cwd=tmp_path)
    assert context.secrets.get("DB_NAME") == "test_db"
    assert context.is_local_env is False


# --- errors ----------------------------------------------------------------------------------


def test_no_bundle_and_no_local_mode_says_what_to_do(tmp_path: Path) -> None:
    context = Context(environ={}, cwd=tmp_path)
    for use in (lambda: context.secrets.get("X"), lambda: context.params,
                lambda: context.state.get()):
        with pytest.raises(NoRunContextError, match=r"fxctl run.*EF_ENV=local"):
            use()
    assert issubclass(NoRunContextError, RuntimeError)


def test_a_missing_bundle_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    context = Context(environ={"FX_BUNDLE": str(missing)})
    with pytest.raises(RunDataError, match=rf"{missing}.*No such file"):
        context.secrets.get("X")


MALFORMED: dict[str, tuple[str | dict[str, Any], str]] = {
    "not-json": ('{"format": 1, ', "not valid JSON"),
    "not-utf8": ('"\udcff"', "not valid JSON"),
    "array": ("[1, 2]", "must hold a JSON object, not an array"),
    "format": (bundle(format=2), "format 2; this fx_ef reads format 1"),
    "no-format": ({k: v for k, v in bundle().items() if k != "format"}, "format None"),
    "run-id-missing": ({k: v for k, v in bundle().items() if k != "run_id"},
                       "run_id must be a non-empty string"),
    "run-id-number": (bundle(run_id=31337421), "run_id must be a non-empty string, found a num"),
    "package-string": (bundle(package="etl"), "package must be an object, found a string"),
    "package-name": (bundle(package={"id": "a/b"}), "package.name must be a non-empty string"),
    "package-project": (bundle(package={"name": "a", "id": "a/b", "project": 3}),
                        "package.project must be a string or null"),
    "secrets-array": (bundle(secrets=["supersecretpas$"]), "secrets must be an object"),
    "params-string": (bundle(params="x"), "params must be an object"),
    "config-array": (bundle(config=[]), "config must be an object"),
    "scope-unknown": (bundle(scopes={"DB_PASS": "service"}),
                      "scopes.DB_PASS is 'service', expected one of package, project, platform"),
    "channel-string": (bundle(channel="unix:/x"), "channel must be an object or null"),
    "channel-no-url": (bundle(channel={"token": "t"}), "channel.url must be a non-empty string"),
    "channel-url-ftp": (bundle(channel={"url": "ftp://x"}), "channel.url must be unix:/PATH"),
    "channel-token": (bundle(channel={"url": "unix:/x", "token": 5}),
                      "channel.token must be a string or null"),
    "platform-write": (bundle(allow_platform_write="yes"),
                       "allow_platform_write must be true or false"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_bundle_is_rejected_naming_file_and_problem(tmp_path: Path,
                                                                case: str) -> None:
    document, problem = MALFORMED[case]
    path = tmp_path / "bundle.json"
    if case == "not-utf8":
        path.write_bytes(b'{"format": 1, "run_id": "\xff"}')
    else:
        write_bundle(path, document)
    context = Context(environ={"FX_BUNDLE": str(path)})
    with pytest.raises(RunDataError) as caught:
        context.secrets.get("DB_PASS")
    message = str(caught.value)
    assert str(path) in message
    assert problem in message
    assert "supersecretpas$" not in message
    assert "31337421" not in message  # a value of the wrong type is described, never quoted
    assert isinstance(caught.value, ValueError)
    # The context stays unloaded: a fixed file is read on the next use.
    write_bundle(path, bundle())
    assert context.secrets.get("DB_PASS") == "supersecretpas$"


# --- the module-level context and helpers ----------------------------------------------------


@pytest.fixture
def shared_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    path = write_bundle(tmp_path / "bundle.json", bundle())
    monkeypatch.setenv("FX_BUNDLE", str(path))
    fx_ef.context._reset()
    yield
    fx_ef.context._reset()


@pytest.mark.usefixtures("shared_context")
def test_module_helpers_read_the_shared_context() -> None:
    assert fx_ef.get_secret("DB_PASS") == "supersecretpas$"
    assert fx_ef.get_secret("MISSING") is None
    assert fx_ef.get_param("package_name") == "etl"
    assert fx_ef.get_param("limit") == 10
    assert fx_ef.context.secrets.get("DB_NAME") == "test_db"


def test_all_lists_the_public_surface() -> None:
    expected = {"Context", "FxEfError", "NoRunContextError", "PlatformWriteNotAllowedError",
                "RunDataError", "SecretWriteError", "StateError", "StateLimitError", "context",
                "get_param", "get_secret"}
    assert set(fx_ef.__all__) == expected
    assert len(fx_ef.__all__) == len(expected)
    for name in fx_ef.__all__:
        assert getattr(fx_ef, name) is not None
    public = {name for name, value in vars(fx_ef).items()
              if not name.startswith("_") and type(value).__name__ != "module"}
    assert public == expected


def test_the_error_tree() -> None:
    assert issubclass(fx_ef.PlatformWriteNotAllowedError, fx_ef.SecretWriteError)
    for kind in (fx_ef.NoRunContextError, fx_ef.RunDataError, fx_ef.SecretWriteError,
                 fx_ef.StateError):
        assert issubclass(kind, fx_ef.FxEfError)
    error = fx_ef.SecretWriteError("cannot", status=403, server_message="no")
    assert (str(error), error.status, error.server_message) == ("cannot", 403, "no")


def test_import_is_lazy_and_imports_nothing_heavy(tmp_path: Path) -> None:
    """``import fx_ef`` reads no file of the run and loads none of the operator or crypto."""
    bundle_path = write_bundle(tmp_path / "bundle.json", bundle())
    (tmp_path / "ef_env.json").write_text("{}")
    script = textwrap.dedent(f"""
        import sys
        opened = []
        sys.addaudithook(lambda event, args: opened.append(str(args[0]))
                         if event == "open" else None)
        before = set(sys.modules)
        import fx_ef, ferris_ef
        from fx_ef import context, get_secret
        new = set(sys.modules) - before
        heavy = ("fx_operator", "kopf", "kubernetes", "cryptography", "http", "logging",
                 "ssl", "socket", "fx_ef._rundata", "fx_ef._channel", "fx_ef.masking",
                 "fx_ef.contract")
        assert not [m for m in new if m.startswith(heavy)], sorted(new)
        assert not [p for p in opened if p.endswith(".json")], opened
        assert context.secrets.get("DB_NAME") == "test_db"
        assert {str(bundle_path)!r} in opened
        assert "cryptography" not in sys.modules
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
        env={"FX_BUNDLE": str(bundle_path), "EF_ENV": "local", "PYTHONPATH": str(PROJECT_ROOT)},
        check=False)
    assert result.returncode == 0, result.stderr

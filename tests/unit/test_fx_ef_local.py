"""EF_ENV=local: ef_env.json's layers, writes into them, ef_state.json under a lock, logging."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from fx_ef import Context, NoRunContextError, RunDataError, SecretWriteError

LOCAL = {"EF_ENV": "local"}
ENV: dict[str, Any] = {
    "params": {"package_name": "demo", "package_id": "p-1", "limit": 5},
    "config": {"region": "eu"},
    "secrets": {"DB_PASS": "package-pass", "EMPTY": ""},
    "project_secrets": {"DB_PASS": "project-pass", "PROJ_ONLY": "project-only-value"},
    "platform_secrets": {"DB_PASS": "platform-pass", "PROJ_ONLY": "platform-shadowed",
                         "PLAT_ONLY": {"k": "platform-only-value"}},
}


def local_context(folder: Path, document: dict[str, Any] | None = None,
                  environ: dict[str, str] | None = None) -> Context:
    env_file = folder / "ef_env.json"
    env_file.write_text(json.dumps(ENV if document is None else document, indent=2))
    env_file.chmod(0o600)
    return Context(environ={**LOCAL, **(environ or {})}, cwd=folder)


def test_layers_resolve_package_then_project_then_platform(tmp_path: Path) -> None:
    context = local_context(tmp_path)
    assert context.is_local_env is True
    assert context.secrets.get("DB_PASS") == "package-pass"
    assert context.secrets.get("EMPTY") == ""  # an empty value does not fall through
    assert context.secrets.get("PROJ_ONLY") == "project-only-value"
    assert context.secrets.get("PLAT_ONLY") == {"k": "platform-only-value"}
    assert context.secrets.get("MISSING") is None


def test_params_config_and_package(tmp_path: Path) -> None:
    context = local_context(tmp_path)
    assert context.params.get("limit") == 5
    assert context.parameters.get("package_name") == "demo"
    assert context.params.get("execution_id") == "local"
    assert context.config.get("region") == "eu"
    assert (context.package.name, context.package.id) == ("demo", "p-1")


def test_the_original_minimal_file_works_and_names_default(tmp_path: Path) -> None:
    folder = tmp_path / "my_service"
    folder.mkdir()
    context = local_context(folder, {"secrets": {"A": "alpha"}})
    assert context.secrets.get("A") == "alpha"
    assert context.package.name == "my_service"
    assert context.params == {"package_name": "my_service", "package_id": "my_service",
                              "execution_id": "local"}
    assert context.config == {}


def test_the_file_is_found_in_the_current_directory(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    local_context(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert Context(environ=LOCAL).secrets.get("DB_PASS") == "package-pass"


def test_a_missing_ef_env_json_is_named(tmp_path: Path) -> None:
    context = Context(environ=LOCAL, cwd=tmp_path)
    with pytest.raises(RunDataError, match=rf"EF_ENV=local.*{tmp_path}/ef_env.json"):
        context.secrets.get("X")


@pytest.mark.parametrize(("document", "problem"), [
    ("[]", "must hold a JSON object, not an array"),
    ('{"secrets": ', "is not valid JSON"),
    ('{"secrets": ["platform-pass"]}', "secrets must be an object, found an array"),
    ('{"project_secrets": "x"}', "project_secrets must be an object, found a string"),
    ('{"params": {"package_name": 7}}', "params.package_name must be a string or null"),
])
def test_a_malformed_ef_env_json_is_named(tmp_path: Path, document: str, problem: str) -> None:
    (tmp_path / "ef_env.json").write_text(document)
    with pytest.raises(RunDataError) as caught:
        Context(environ=LOCAL, cwd=tmp_path).secrets.get("X")
    assert str(tmp_path / "ef_env.json") in str(caught.value)
    assert problem in str(caught.value)
    assert "platform-pass" not in str(caught.value)


def test_no_ef_env_value_other_than_local_counts(tmp_path: Path) -> None:
    local_context(tmp_path)
    context = Context(environ={"EF_ENV": "prod"}, cwd=tmp_path)
    assert context.is_local_env is False
    with pytest.raises(NoRunContextError):
        context.secrets.get("DB_PASS")


# --- secrets.set ------------------------------------------------------------------------------


def test_set_writes_the_matching_layer_atomically(tmp_path: Path) -> None:
    context = local_context(tmp_path)
    context.secrets.set("NEW", {"somekey": "someval"}, "project")
    context.secrets.set(name="PLAT_NEW", value="plat-value", context="platform")
    written = json.loads((tmp_path / "ef_env.json").read_text())
    assert written["project_secrets"]["NEW"] == {"somekey": "someval"}
    assert written["platform_secrets"]["PLAT_NEW"] == "plat-value"
    for key in ("params", "config", "secrets"):
        assert written[key] == ENV[key]  # everything else kept
    assert stat.S_IMODE((tmp_path / "ef_env.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ef_env.json"]  # no leftovers
    # This run sees the new values, and so does the next one.
    assert context.secrets.get("NEW") == {"somekey": "someval"}
    assert Context(environ=LOCAL, cwd=tmp_path).secrets.get("PLAT_NEW") == "plat-value"


def test_set_creates_a_missing_layer(tmp_path: Path) -> None:
    context = local_context(tmp_path, {"secrets": {}})
    context.secrets.set("X", "value-x", "platform")
    written = json.loads((tmp_path / "ef_env.json").read_text())
    assert written == {"secrets": {}, "platform_secrets": {"X": "value-x"}}


def test_set_follows_precedence(tmp_path: Path) -> None:
    context = local_context(tmp_path)
    context.secrets.set("DB_PASS", "new-project-pass", "project")
    context.secrets.set("PROJ_ONLY", "new-platform-value", "platform")
    context.secrets.set("PLAT_ONLY", "project-now", "project")
    assert context.secrets.get("DB_PASS") == "package-pass"
    assert context.secrets.get("PROJ_ONLY") == "project-only-value"
    assert context.secrets.get("PLAT_ONLY") == "project-now"


def test_set_reports_the_value_for_masking_in_local_mode_too(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        context = local_context(tmp_path, environ={"FX_MASK_FD": str(write_end)})
        context.secrets.set("TOKEN", "fresh-token-value")
        assert json.loads(os.read(read_end, 4096)) == {"name": "TOKEN",
                                                       "value": "fresh-token-value"}
    finally:
        os.close(read_end)
        os.close(write_end)


def test_set_keeps_a_change_made_by_someone_else(tmp_path: Path) -> None:
    context = local_context(tmp_path)
    context.secrets.get("DB_PASS")
    document = json.loads((tmp_path / "ef_env.json").read_text())
    document["secrets"]["EDITED"] = "by-hand"
    (tmp_path / "ef_env.json").write_text(json.dumps(document))
    context.secrets.set("NEW", "value-new")
    written = json.loads((tmp_path / "ef_env.json").read_text())
    assert written["secrets"]["EDITED"] == "by-hand"
    assert written["project_secrets"]["NEW"] == "value-new"


def test_set_refuses_a_layer_edited_into_a_non_object(tmp_path: Path) -> None:
    context = local_context(tmp_path)
    context.secrets.get("DB_PASS")
    (tmp_path / "ef_env.json").write_text(json.dumps({**ENV, "project_secrets": "oops"}))
    with pytest.raises(SecretWriteError, match=r"project_secrets in .*ef_env\.json is not an obj"):
        context.secrets.set("NEW", "value-new")
    assert json.loads((tmp_path / "ef_env.json").read_text())["project_secrets"] == "oops"
    (tmp_path / "ef_env.json").unlink()
    with pytest.raises(SecretWriteError, match="No such file"):
        context.secrets.set("NEW", "value-new")


# --- state ------------------------------------------------------------------------------------


def test_state_lives_in_ef_state_json(tmp_path: Path) -> None:
    context = local_context(tmp_path)
    assert context.state.get() == {}
    context.state.put("some_key", "some_value")
    context.state.put("cursor", {"offset": 3})
    assert context.state.get() == {"some_key": "some_value", "cursor": {"offset": 3}}
    assert json.loads((tmp_path / "ef_state.json").read_text()) == context.state.get()
    assert Context(environ=LOCAL, cwd=tmp_path).state.get()["cursor"] == {"offset": 3}


def test_a_malformed_state_file_is_named(tmp_path: Path) -> None:
    context = local_context(tmp_path)
    (tmp_path / "ef_state.json").write_text("[1]")
    with pytest.raises(RunDataError, match=rf"{tmp_path}/ef_state\.json must hold a JSON object"):
        context.state.get()
    with pytest.raises(RunDataError, match=r"ef_state\.json must hold a JSON object"):
        context.state.put("k", "v")


def _put_many(folder: str, worker: int, count: int) -> None:
    context = Context(environ=LOCAL, cwd=folder)
    for index in range(count):
        context.state.put(f"w{worker}-{index}", index)
        context.secrets.set(f"S{worker}_{index}", f"value-{worker}-{index}")


def test_concurrent_writers_lose_no_key(tmp_path: Path) -> None:
    local_context(tmp_path)
    workers, count = 4, 15
    spawn = multiprocessing.get_context("spawn")
    processes = [spawn.Process(target=_put_many, args=(str(tmp_path), worker, count))
                 for worker in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    state = Context(environ=LOCAL, cwd=tmp_path).state.get()
    assert state == {f"w{w}-{i}": i for w in range(workers) for i in range(count)}
    written = json.loads((tmp_path / "ef_env.json").read_text())
    expected = {f"S{w}_{i}": f"value-{w}-{i}" for w in range(workers) for i in range(count)}
    assert written["project_secrets"] == {**ENV["project_secrets"], **expected}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ef_env.json", "ef_state.json"]


# --- logging ----------------------------------------------------------------------------------


def test_local_logging_masks_every_local_secret(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    context = local_context(tmp_path)
    log = context.logging
    assert isinstance(log, logging.Logger)
    assert log.name == "fx_ef.package"
    log.info("package %s", context.secrets.get("DB_PASS"))
    log.warning("shadowed platform value: platform-pass, nested: platform-only-value")
    context.secrets.set("LATER", "set-during-the-run")
    log.error("later: %s", "set-during-the-run")
    try:
        raise RuntimeError("project-only-value in a traceback")
    except RuntimeError:
        log.exception("failed")
    err = capsys.readouterr().err
    for value in ("package-pass", "platform-pass", "platform-only-value", "set-during-the-run",
                  "project-only-value"):
        assert value not in err
    assert err.count("***") >= 5
    assert "INFO package ***" in err
    assert "Traceback" in err
    context._reset()
    assert not [h for h in logging.getLogger("fx_ef.package").handlers
                if type(h).__name__ == "_StderrHandler"]


def test_logging_in_a_run_writes_to_stderr(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    bundle = {"format": 1, "run_id": "r", "package": {"name": "n", "id": "p/n"}}
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    context = Context(environ={"FX_BUNDLE": str(tmp_path / "bundle.json")})
    assert context.logging is context.logging
    context.logging.info("hello from the run")
    context.logging.debug("not shown")
    captured = capsys.readouterr()
    assert "INFO hello from the run" in captured.err
    assert "not shown" not in captured.err
    assert captured.out == ""
    context._reset()


def test_logging_works_without_any_run(capsys: pytest.CaptureFixture[str]) -> None:
    context = Context(environ={})
    context.logging.warning("no run here")
    assert "WARNING no run here" in capsys.readouterr().err
    context._reset()

"""Every name check anchors the whole string: Python's ``$`` also matches before a trailing "\n",
so ``re.match(r"^[a-z]+$", "team-a\n")`` succeeds. A name ending in a line break is refused."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from fx_operator.domain.package_spec import parse_package_spec
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.domain.secrets_file import validate_name
from fx_operator.exceptions import ValidationError
from fx_operator.services.local_run import load_package_folder

ENDINGS = ["\n", "\r\n"]
REPO = Path(__file__).resolve().parents[2]
PRODUCT_DIRS = [REPO / "operator" / "fx_operator", REPO / "fx_ef", REPO / "ferris_ef"]


# --- Owner.of: project and package names (scopes.OWNER_NAME_PATTERN) -----------------------------

@pytest.mark.parametrize("ending", ENDINGS)
def test_project_with_trailing_line_break_is_refused(ending: str) -> None:
    with pytest.raises(ValidationError) as e:
        Owner.of(Scope.PROJECT, "team-a" + ending)
    assert repr("team-a" + ending) in str(e.value) and "project" in str(e.value)


@pytest.mark.parametrize("ending", ENDINGS)
def test_package_with_trailing_line_break_is_refused(ending: str) -> None:
    with pytest.raises(ValidationError) as e:
        Owner.of(Scope.PACKAGE, "team-a", "etl" + ending)
    assert repr("etl" + ending) in str(e.value) and "package" in str(e.value)


def test_plain_project_and_package_are_accepted() -> None:
    assert Owner.of(Scope.PROJECT, "team-a") == Owner(Scope.PROJECT, "team-a")
    assert Owner.of(Scope.PACKAGE, "team-a", "etl") == Owner(Scope.PACKAGE, "team-a", "etl")
    assert Owner.chain("team-a", "etl")[0] == Owner(Scope.PACKAGE, "team-a", "etl")


def test_chain_refuses_a_project_with_a_line_break() -> None:
    with pytest.raises(ValidationError):
        Owner.chain("team-a\n", "etl")


# --- a local package folder: its name and --project (local_run, same pattern) -------------------

def _folder(parent: Path, name: str) -> Path:
    folder = parent / name
    folder.mkdir()
    (folder / "main.py").write_text("print('hi')\n")
    return folder


@pytest.mark.parametrize("ending", ENDINGS)
def test_local_run_project_with_trailing_line_break_is_refused(tmp_path: Path,
                                                               ending: str) -> None:
    folder = _folder(tmp_path, "etl")
    with pytest.raises(ValidationError) as e:
        load_package_folder(folder, project="team-a" + ending)
    assert repr("team-a" + ending) in str(e.value)


@pytest.mark.parametrize("ending", ENDINGS)
def test_local_run_folder_name_with_trailing_line_break_is_refused(tmp_path: Path,
                                                                   ending: str) -> None:
    folder = _folder(tmp_path, "etl" + ending)
    with pytest.raises(ValidationError) as e:
        load_package_folder(folder)
    assert repr("etl" + ending) in str(e.value)


def test_local_run_plain_names_are_accepted(tmp_path: Path) -> None:
    loaded = load_package_folder(_folder(tmp_path, "etl"), project="team-a")
    assert (loaded.name, loaded.project, loaded.entrypoint) == ("etl", "team-a", "main.py")


# --- package.yaml: name, project, entrypoint (pydantic patterns, Rust regex) -------------------

@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize(("field", "value"), [("name", "etl"), ("project", "team-a"),
                                              ("entrypoint", "main.py")])
def test_package_yaml_field_with_trailing_line_break_is_refused(field: str, value: str,
                                                                ending: str) -> None:
    text = f"{field}: {(value + ending)!r}\n".replace("'", '"')
    with pytest.raises(ValidationError) as e:
        parse_package_spec(text)
    assert field in str(e.value)


def test_package_yaml_plain_fields_are_accepted() -> None:
    spec = parse_package_spec("name: etl\nproject: team-a\nentrypoint: main.py\n")
    assert (spec.name, spec.project, spec.entrypoint) == ("etl", "team-a", "main.py")


# --- secret names (secrets_file.NAME_PATTERN) ---------------------------------------------------

@pytest.mark.parametrize("ending", ENDINGS)
def test_secret_name_with_trailing_line_break_is_refused(ending: str) -> None:
    with pytest.raises(ValidationError):
        validate_name("DB_PASS" + ending)


def test_plain_secret_name_is_accepted() -> None:
    validate_name("DB_PASS")


# --- the audit: no name check in product code uses re.match / Pattern.match ---------------------

def _match_calls(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "match":
            found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_no_prefix_only_match_in_product_code() -> None:
    # Pattern.match anchors only the start; a check must use fullmatch. The one search-style use
    # (masking: the longest secret form at a given position, inside arbitrary output) is allowed.
    allowed = {"fx_ef/masking.py"}
    calls = [call for d in PRODUCT_DIRS for path in sorted(d.rglob("*.py"))
             for call in _match_calls(path) if call.split(":")[0] not in allowed]
    assert calls == []

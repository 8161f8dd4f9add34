"""Bugs the fuzz targets (tests/fuzz) found in the parsers' own modules, as plain unit tests."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fx_operator.domain.nesting import depth, too_deep
from fx_operator.domain.sealing import SealingKeyPair, SealTarget
from fx_operator.exceptions import IntegrityError, ValidationError

from fx_ef._errors import RunDataError
from fx_ef._rundata import load_bundle
from fx_ef.bundle import BundleError, new_run_key, open_bundle, seal_bundle

PAIR = SealingKeyPair.generate()


@pytest.mark.parametrize("name", ["\ud800", "A\nB", "\x00" * 300])
def test_a_sealed_value_error_names_an_odd_target_on_one_printable_line(name: str) -> None:
    target = SealTarget("team-a", "package", "etl", name)
    with pytest.raises((ValidationError, IntegrityError)) as refused:
        PAIR.open(target, PAIR.public.seal_plaintext(SealTarget("team-a", "package", "etl", "A"),
                                                     b"1"))
    message = str(refused.value)
    message.encode("utf-8")  # raised UnicodeEncodeError for the lone surrogate before
    assert "\n" not in message and len(message) < 1_000


def _alias_bomb(levels: int, width: int) -> list[Any]:
    """What YAML's aliases build: each level a list holding the level below ``width`` times."""
    value: list[Any] = ["x"]
    for _ in range(levels):
        value = [value] * width
    return value


@pytest.mark.timeout(30)  # a hang guard, not a timing assertion: before, 9**9 paths were walked
def test_depth_measures_a_shared_container_once() -> None:
    assert depth(_alias_bomb(9, 9)) == 10
    assert too_deep({"params": _alias_bomb(40, 2)}) == \
        "is nested 42 levels deep; at most 32 are allowed"


@pytest.mark.timeout(30)  # before: an endless loop
def test_a_container_inside_itself_is_refused() -> None:
    loop: list[Any] = [1]
    loop.append({"k": loop})
    assert depth(loop) is None
    assert too_deep({"params": loop}) == \
        "contains itself (a YAML alias cycle); a value must be a tree"


# --- the run's bundle (fx_ef) --------------------------------------------------------------------

def _bundle(**changes: Any) -> dict[str, Any]:
    return {"format": 1, "run_id": "run-1", "package": {"name": "etl", "id": "team-a/etl"},
            "secrets": {"A": "x"}, "scopes": {"A": "package"}, **changes}


@pytest.mark.parametrize(("raw", "message"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # RecursionError before
    (json.dumps(_bundle(scopes={"A": []})).encode(), "scopes.A is an array"),  # TypeError
    (json.dumps(_bundle(format=[[1]])).encode(), "has format an array"),
])
def test_a_malformed_bundle_is_a_run_data_error(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(raw)
    with pytest.raises(RunDataError, match=re.escape(message)):
        load_bundle(str(path))


@pytest.mark.parametrize("run_id", ["\ud800", None, ""])
def test_a_run_id_the_associated_data_cannot_carry_is_a_bundle_error(run_id: Any) -> None:
    key = new_run_key()
    with pytest.raises(BundleError, match="run id"):  # UnicodeEncodeError, AttributeError before
        seal_bundle(_bundle(run_id=run_id), key)
    with pytest.raises(BundleError, match="run id"):
        open_bundle(seal_bundle(_bundle(), key), key, run_id)


@pytest.mark.parametrize("params", [{"s": "\udfff"}, {"n": {1, 2}}])
def test_a_bundle_json_cannot_carry_is_a_bundle_error(params: Any) -> None:
    with pytest.raises(BundleError, match="cannot be written as JSON"):
        seal_bundle(_bundle(params=params), new_run_key())

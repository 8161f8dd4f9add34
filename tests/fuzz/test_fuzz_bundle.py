"""Fuzz target: the run's bundle, as the pod reads it: the sealed file opened by the init step
(``fx_ef.bundle.open_bundle``) and the JSON the script's ``fx_ef`` reads (``fx_ef._rundata``).
The operator writes it, but from a tenant's params, config and secrets; and a bundle that a bug
or an attacker altered must fail with the runtime's named error.

Property: any bytes either load to a ``RunData`` or raise ``RunDataError``; any sealed bytes,
run id and bundle either open (seal) or raise ``BundleError``; never another exception.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from hypothesis import event, example, given
from hypothesis import strategies as st

from fuzz import strategies as fz
from fuzz.checks import message_is_clean
from fuzz.profiles import fuzz_settings
from fx_ef import contract
from fx_ef._errors import RunDataError
from fx_ef._rundata import RunData, load_bundle, load_local
from fx_ef.bundle import BundleError, new_run_key, open_bundle, seal_bundle

VALID = {"format": contract.BUNDLE_FORMAT, "run_id": "run-1",
         "package": {"name": "etl", "id": "team-a/etl", "project": "team-a"},
         "entrypoint": "main.py", "params": {"day": "monday"}, "config": {},
         "secrets": {"DB_PASS": "x"}, "scopes": {"DB_PASS": "package"},
         "channel": {"url": "https://broker:8443", "token_file": "/t", "ca_file": "/c"},
         "allow_platform_write": False}
FIELDS = sorted(VALID)
#: A valid bundle with some fields replaced by any JSON text (or removed).
MUTATED_BUNDLES = st.lists(
    st.tuples(st.sampled_from(FIELDS), fz.VALUE_TOKENS | st.none()), max_size=4,
).map(lambda changes: fz.encode("{" + ",".join(
    f"{json.dumps(key)}:{token if token is not None else json.dumps(VALID[key])}"
    for key, token in [*[(k, None) for k in FIELDS if k not in dict(changes)],
                       *[(k, t) for k, t in changes if t is not None]]) + "}"))


def _loads_or_refuses(raw: bytes, loader: Any = load_bundle) -> None:
    with tempfile.TemporaryDirectory(prefix="fx-fuzz-") as folder:
        path = os.path.join(folder, "bundle.json")
        with open(path, "wb") as file:
            file.write(raw)
        try:
            data = loader(path)
        except RunDataError as e:
            message_is_clean(e)
            event("refused")
            return
    event("loaded")
    assert isinstance(data, RunData)
    assert all(scope in contract.SCOPES for scope in data.scopes.values())


@fuzz_settings(250)
@given(st.one_of(MUTATED_BUNDLES, fz.mutated(MUTATED_BUNDLES), fz.RAW_BYTES))
@example(json.dumps(VALID).encode())
@example(b"[" * 100_000 + b"]" * 100_000)
@example(json.dumps({**VALID, "scopes": {"DB_PASS": []}}).encode())
@example(json.dumps({**VALID, "format": [[[[1]]]]}).encode())
@example(b'{"format": ' + b"[" * 990 + b"]" * 990 + b"}")
def test_bundle_file(raw: bytes) -> None:
    _loads_or_refuses(raw)


@fuzz_settings(100)
@given(st.one_of(MUTATED_BUNDLES, fz.RAW_BYTES))
def test_local_environment_file(raw: bytes) -> None:
    _loads_or_refuses(raw, load_local)


KEY = new_run_key()
RUN_IDS = st.sampled_from(["run-1", "run-2", "", "\ud800", "x" * 10_000]) | fz.TEXT


@fuzz_settings(150)
@given(fz.mutated(st.just(seal_bundle(VALID, KEY))) | fz.RAW_BYTES, RUN_IDS,
       st.sampled_from([KEY, new_run_key(), b"", b"k" * 31]))
@example(seal_bundle(VALID, KEY), "\ud800", KEY)
def test_open_sealed_bundle(sealed: bytes, run_id: str, key: bytes) -> None:
    try:
        plaintext = open_bundle(sealed, key, run_id)
    except BundleError as e:
        message_is_clean(e)
        event("refused")
        return
    event("opened")
    assert json.loads(plaintext)["run_id"] == run_id


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | fz.TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(fz.TEXT, children,
                                                                      max_size=3),
    max_leaves=8,
)


@fuzz_settings(150)
@given(st.dictionaries(st.sampled_from(FIELDS), _JSON, max_size=3))
@example({"run_id": "\ud800"})
@example({"params": {"s": "\udfff"}})
@example({"run_id": None})
def test_seal_then_load(changes: dict[str, Any]) -> None:
    """What the operator seals from a tenant's values opens and loads, or is a BundleError."""
    bundle = {**VALID, **changes}
    try:
        sealed = seal_bundle(bundle, KEY)
    except BundleError as e:
        message_is_clean(e)
        event("refused")
        return
    event("sealed")
    _loads_or_refuses(open_bundle(sealed, KEY, bundle["run_id"]))

"""A canary secret at all three scopes never shows in plaintext in a dump, a log line or output."""

from __future__ import annotations

import base64
import logging
from urllib.parse import urlsplit

import pytest
from fx_operator.config import Settings
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.services import rotation
from fx_operator.services.configured_store import open_secret_service
from fx_operator.services.secret_service import SecretService

CANARY = "canary-7f3a9c1e-do-not-leak"
CANARY_FORMS = (CANARY, base64.b64encode(CANARY.encode()).decode(), CANARY[::-1])


def _assert_clean(blob: bytes | str, where: str) -> None:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    for form in CANARY_FORMS:
        assert form not in text, f"the canary leaked into {where}"


def _store_dump(settings: Settings, request: pytest.FixtureRequest) -> bytes:
    if settings.database_url:
        server = request.getfixturevalue("postgres_server")
        dump: bytes = server.dump(urlsplit(settings.database_url).path.lstrip("/"))
        assert b"secret_versions" in dump and b"COPY" in dump  # a real dump of our tables
        return dump
    files = sorted(settings.embedded_path.parent.glob(settings.embedded_path.name + "*"))
    assert files, "the embedded store file exists"
    return b"".join(f.read_bytes() for f in files)


def test_the_canary_is_in_no_dump_and_no_log(service: SecretService, store_settings: Settings,
                                             request: pytest.FixtureRequest,
                                             caplog: pytest.LogCaptureFixture,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    service.close()
    service = open_secret_service(store_settings)  # migrations and start-up logged too
    owners = [Owner.of(Scope.PACKAGE, "default", "pkg"), Owner.of(Scope.PROJECT, "default"),
              Owner.of(Scope.PLATFORM)]
    for owner in owners:
        service.set(owner, "CANARY", CANARY, run_id="run-canary")
        service.set(owner, "CANARY_STRUCT", {"inner": CANARY})
    service.set(owners[0], "CANARY", CANARY + "-v2")
    rotation.rotate_data_key(service.keys, owners[1], actor=service.actor)
    resolution = service.resolve("default", "pkg", run_id="run-canary")
    assert resolution.values["CANARY_STRUCT"] == {"inner": CANARY}

    dump = _store_dump(store_settings, request)
    assert b"CANARY_STRUCT" in dump  # names are visible; values are not
    _assert_clean(dump, "the store dump")
    _assert_clean(repr(resolution.manifest_dict()), "the resolution manifest")
    _assert_clean(repr(service.audit_records(limit=1000)), "the audit records")
    assert caplog.records, "logging was captured"
    _assert_clean(caplog.text, "a log line")
    out, err = capfd.readouterr()
    _assert_clean(out + err, "the process output")
    service.close()

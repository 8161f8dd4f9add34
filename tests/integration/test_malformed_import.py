"""Every malformed secrets.json is refused with a clear error and leaves the store as it was."""

from __future__ import annotations

import pytest
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.exceptions import ValidationError
from fx_operator.services.secret_service import SecretService
from support.malformed_secrets import MALFORMED_CASES
from support.stores import raw_blobs


def test_at_least_30_cases() -> None:
    assert len(MALFORMED_CASES) >= 30


def test_malformed_imports_change_nothing(service: SecretService) -> None:
    owner = Owner.of(Scope.PACKAGE, "default", "pkg")
    service.import_file(b'{"DB_NAME": "test_db", "DB_PASS": "supersecretpas$"}',
                        project="default", package="pkg")
    blobs = raw_blobs(service)
    audit = service.audit_records(limit=1000)

    for case_id, raw, expected in MALFORMED_CASES:
        with pytest.raises(ValidationError) as caught:
            service.import_file(raw, project="default", package="pkg")
        assert expected.lower() in str(caught.value).lower(), case_id
        assert raw_blobs(service) == blobs, case_id

    assert service.audit_records(limit=1000) == audit
    assert service.resolve("default", "pkg").values == {"DB_NAME": "test_db",
                                                        "DB_PASS": "supersecretpas$"}
    assert [r.version for r in service.history(owner, "DB_PASS")] == [1]

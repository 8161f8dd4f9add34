"""``fxctl secrets history|delete|rollback NAME`` find NAME's owner with a lookup of that name,
not a listing of every secret (issue 19: slow at 100k secrets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from fx_operator.cli.secrets import resolve_owner
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.storage.secret_store import ListedSecret
from support.stores import open_service, settings_for

PACKAGE = Owner.of(Scope.PACKAGE, "team-a", "etl")
PROJECT = Owner.of(Scope.PROJECT, "team-a")


def test_the_owner_is_found_reading_only_that_names_rows(tmp_path: Path) -> None:
    service = open_service(settings_for("embedded", tmp_path, None))
    try:
        service.set_many(PACKAGE, {f"OTHER_{i:03d}": f"value-{i}" for i in range(50)})
        service.set(PACKAGE, "ONLY_HERE", "v1")
        service.set(PACKAGE, "BOTH", "v1")
        service.set(PROJECT, "BOTH", "v2")
        service.set(PROJECT, "GONE", "v3")
        service.delete(PROJECT, "GONE")
        rows_read: list[int] = []
        listing = service.store.listing

        def counting(*args: Any, **kwargs: Any) -> list[ListedSecret]:
            found = listing(*args, **kwargs)
            rows_read.append(len(found))
            return found
        service.store.listing = counting  # type: ignore[method-assign]

        assert resolve_owner(service, "ONLY_HERE", None, None, None) == PACKAGE
        assert resolve_owner(service, "GONE", None, None, None) == PROJECT  # deleted: history
        with pytest.raises(click.UsageError, match="choose one with --scope"):
            resolve_owner(service, "BOTH", None, None, None)
        assert rows_read == [1, 1, 2]
        assert [(r.owner, r.name) for r in service.list(name="BOTH")] == [
            (PACKAGE, "BOTH"), (PROJECT, "BOTH")]
    finally:
        service.close()

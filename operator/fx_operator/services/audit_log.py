"""The audit as users read it: records by filter, and who received a version or a data key.

After a leak or a rotation the question is "which runs got this value": ``consumers_*`` answer
it from the resolution records, which list what each run was sealed (name, scope, version and
the data key that wrapped it) and never a value.
"""

from __future__ import annotations

from fx_operator.domain.scopes import Owner
from fx_operator.storage import audit_log
from fx_operator.storage.audit_log import AuditFilter, Consumer, ConsumerKey, LoggedRecord
from fx_operator.storage.backends import Transaction
from fx_operator.storage.secret_store import SecretStore

__all__ = ["AuditFilter", "AuditLog", "Consumer", "ConsumerKey", "LoggedRecord"]


class AuditLog:
    """Queries over one store's audit (either store: the same answers). Each first brings the
    version-level index up to date (``audit_log.index_pending``): the one write they make."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store

    def records(self, where: AuditFilter, *, after: int | None = None,
                limit: int | None = None) -> list[LoggedRecord]:
        """Records matching ``where``, newest first, older than record ``after``."""
        with self.store.transaction() as tx:
            self._index(tx)
            return audit_log.records(tx, where, after=after, limit=limit)

    def consumers_of_version(self, owner: Owner, name: str, version: int | None, *,
                             after: ConsumerKey | None = None,
                             limit: int | None = None) -> list[Consumer]:
        """The runs that received ``name`` of ``owner`` (that ``version``, or any)."""
        with self.store.transaction() as tx:
            self._index(tx)
            return audit_log.consumers_of_version(tx, owner, name, version, after=after,
                                                  limit=limit)

    def consumers_of_data_key(self, data_key_id: str, name: str | None = None, *,
                              after: ConsumerKey | None = None,
                              limit: int | None = None) -> list[Consumer]:
        """The runs that received a value wrapped by one data key."""
        with self.store.transaction() as tx:
            self._index(tx)
            return audit_log.consumers_of_data_key(tx, data_key_id, name, after=after,
                                                   limit=limit)

    def _index(self, tx: Transaction) -> None:
        """The version-level index brought up to the records written since it last was."""
        audit_log.index_pending(tx, self.store.backend.dialect)

"""What to do for a ScopedSecret: open its sealed values, move them into the store, report names
and versions (never values); on deletion, take its names out of resolution.

Tenancy (P5): a ScopedSecret writes only its own namespace's project or package scope, and
platform scope only in the operator's platform namespace. A value sealed for another namespace,
scope, package or name does not open, so it cannot be replayed into this object.

Bad input (P8): a sealed value that cannot be opened or parsed (anyone may seal: the key is
public) and a name that could never be stored are ``ValidationError``s naming the key, never the
value, so the object gets ``Ready=False`` (InvalidSecret) and a Warning Event, and nothing is
written: every value is opened and checked before the first write.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fx_operator.config import Settings
from fx_operator.domain.conditions import (
    EventNote,
    Outcome,
    Reason,
    mark_ready,
)
from fx_operator.domain.resources import ScopedSecret, ScopedSecretSpec, not_ready
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.domain.sealing import SealingKeyPair, SealTarget
from fx_operator.domain.secrets_file import validate_name
from fx_operator.exceptions import IntegrityError, Problem, ValidationError
from fx_operator.services.secret_service import SecretService

log = logging.getLogger(__name__)


def owner_of(namespace: str, spec: ScopedSecretSpec, settings: Settings) -> Owner:
    """The owner a ScopedSecret writes to, or a ValidationError naming the field."""
    scope = spec.scope
    if scope == Scope.PLATFORM.value and namespace != settings.platform_namespace:
        raise ValidationError(Problem(
            "spec.scope", f"platform scope is accepted only in the platform namespace "
            f"{settings.platform_namespace!r}, not in {namespace!r}",
            Reason.PLATFORM_SCOPE_NOT_ALLOWED), source="ScopedSecret")
    if scope == Scope.PACKAGE.value and not spec.package:
        raise ValidationError(Problem("spec.package", "package scope needs spec.package"),
                              source="ScopedSecret")
    if scope != Scope.PACKAGE.value and spec.package:
        raise ValidationError(Problem("spec.package", "is only for package scope"),
                              source="ScopedSecret")
    return Owner.of(scope, namespace, spec.package)


class ScopedSecretService:
    def __init__(self, secrets: SecretService, sealing: SealingKeyPair,
                 settings: Settings) -> None:
        self.secrets = secrets
        self.sealing = sealing
        self.settings = settings

    def _actor(self, secret: ScopedSecret) -> str:
        return f"operator:ScopedSecret/{secret.metadata.namespace}/{secret.metadata.name}"

    async def reconcile(self, secret: ScopedSecret) -> Outcome:
        meta, spec, status = secret.metadata, secret.spec, secret.status
        namespace, generation = meta.namespace, meta.generation
        try:
            owner = owner_of(namespace, spec, self.settings)
            values = self._open(namespace, owner, spec.encrypted_data)
            written = await asyncio.to_thread(self.secrets.sync_values, owner, values,
                                              action="apply", actor=self._actor(secret))
            previous = {s.name for s in status.secrets if s.name is not None}
            removed = sorted(previous - set(values))
            if removed:
                await asyncio.to_thread(self.secrets.delete_many, owner, removed,
                                        actor=self._actor(secret), action="remove")
            versions = await asyncio.to_thread(self.secrets.current_versions, owner)
        except (ValidationError, IntegrityError) as e:
            refused = not_ready(secret, e, Reason.INVALID_SECRET)
            log.warning("ScopedSecret %s/%s refused: %s", namespace, meta.name,
                        refused.events[0].message)
            return refused
        stored = [{"name": n, "version": versions[n]} for n in sorted(values) if n in versions]
        changes = ", ".join(f"{n} v{v}" for n, v in sorted(written.items()))
        message = (f"{len(stored)} secret(s) stored at {owner.scope.value} scope; "
                   + (f"new versions: {changes}" if written else "unchanged"))
        events = [EventNote("Normal", Reason.STORED, message)] if written or removed else []
        return mark_ready(status.condition_dicts(), generation=generation, reason=Reason.STORED,
                          message=message, events=events,
                          fields={"secretCount": len(stored), "secrets": stored})

    def _open(self, namespace: str, owner: Owner, sealed: dict[str, str]) -> dict[str, Any]:
        if not sealed:
            raise ValidationError(Problem("spec.encryptedData", "holds no secrets"),
                                  source="ScopedSecret")
        values: dict[str, Any] = {}
        for name, text in sorted(sealed.items()):
            # Before opening: a name too long for a sealed value's associated data (65,535
            # bytes) is refused by the rule every stored name follows (128 characters).
            validate_name(name, source="ScopedSecret")
            target = SealTarget(namespace, owner.scope.value, owner.package, name)
            values[name] = self.sealing.open(target, text)
        return values

    async def remove(self, secret: ScopedSecret) -> list[str]:
        """On deletion: tombstone this object's names, so they stop resolving at its scope."""
        try:
            owner = owner_of(secret.metadata.namespace, secret.spec, self.settings)
        except ValidationError:
            return []  # it never stored anything
        names = sorted(set(secret.spec.encrypted_data) |
                       {s.name for s in secret.status.secrets if s.name is not None})
        removed = await asyncio.to_thread(self.secrets.delete_many, owner, names,
                                          actor=self._actor(secret), action="remove")
        return sorted(removed)

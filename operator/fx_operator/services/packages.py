"""What to do for a Package: check it, publish its scripts for run pods, report its status.

A Package never holds a secret: a script named ``secrets.json`` is refused, and so is a script in
which the value of one of the package's stored secrets appears (P1); the condition names the
secret, never its value.
"""

from __future__ import annotations

import asyncio
import logging

from fx_ef.masking import Masker
from fx_operator.domain import job_spec
from fx_operator.domain.conditions import (
    READY,
    SECRETS_AVAILABLE,
    EventNote,
    Outcome,
    Reason,
    mark_ready,
    with_condition,
)
from fx_operator.domain.package_definition import PackageDefinition, definition_of
from fx_operator.domain.resources import Package, not_ready
from fx_operator.domain.secret_needs import SecretNeeds, find_in_scripts
from fx_operator.exceptions import Problem, ValidationError
from fx_operator.services.secret_service import SecretService
from fx_operator.storage.kube import Kube

log = logging.getLogger(__name__)
#: Dynamic reads listed in a Package's status (the rest: fxctl explain).
MAX_PLACES_SHOWN = 20


class PackageService:
    def __init__(self, secrets: SecretService, kube: Kube) -> None:
        self.secrets = secrets
        self.kube = kube

    def definition(self, resource: Package) -> PackageDefinition:
        return definition_of(resource.metadata.name, resource.spec)

    async def reconcile(self, resource: Package) -> Outcome:
        meta = resource.metadata
        namespace, name, generation = meta.namespace, meta.name, meta.generation
        conditions = resource.status.condition_dicts()
        try:
            package = self.definition(resource)
            chain = await self._refuse_secrets_in_scripts(namespace, package)
        except ValidationError as e:
            return not_ready(resource, e, Reason.INVALID_SPEC)
        config_map = job_spec.scripts_configmap(namespace, name, meta.uid, package.scripts)
        await self.kube.apply_config_map(config_map)
        message = (f"{len(package.scripts)} script(s) published in ConfigMap "
                   f"{config_map['metadata']['name']}; entrypoint {package.entrypoint}")
        previously_ready = any(c.get("type") == READY and c.get("status") == "True"
                               and c.get("observedGeneration") == generation
                               for c in conditions or [])
        events = [] if previously_ready else [
            EventNote("Normal", Reason.SCRIPTS_PUBLISHED, message)]
        needs = SecretNeeds.of(package.secrets, find_in_scripts(package.scripts))
        unset = sorted(set(needs.names or ()) - chain)
        available = (f"read or declared but set at no scope when the Package was published: "
                     f"{', '.join(unset)} (runs get None for them; a required one fails its "
                     "run at admission)") if unset else "every name read or declared is set"
        conditions = with_condition(conditions, type_=SECRETS_AVAILABLE, ok=not unset,
                                    reason=Reason.SECRET_MISSING if unset else Reason.SECRETS_SET,
                                    message=available, generation=generation)
        return mark_ready(conditions, generation=generation, reason=Reason.SCRIPTS_PUBLISHED,
                          message=message, events=events, fields={
            "scriptCount": len(package.scripts), "entrypoint": package.entrypoint,
            "configMap": config_map["metadata"]["name"],
            "contentHash": job_spec.content_hash(package.scripts),
            "secretsFound": sorted(needs.found.names),
            "secretsDynamic": [str(place) for place in needs.found.dynamic[:MAX_PLACES_SHOWN]]})

    async def _refuse_secrets_in_scripts(self, namespace: str,
                                         package: PackageDefinition) -> set[str]:
        """Refuse scripts that hold a stored value; the names set in the package's chain."""
        resolution = await asyncio.to_thread(
            self.secrets.resolve, namespace, package.name, actor="operator:package-check")
        found = sorted({secret for secret, value in resolution.values.items()
                        for content in package.scripts.values()
                        if Masker({secret: value}).masked_spans(content)})
        if found:
            raise ValidationError(
                [Problem("spec.scripts", f"the value of secret {secret!r} appears in a script: "
                         "read it with context.secrets.get instead", Reason.SECRET_IN_SCRIPT)
                 for secret in found],
                source=f"Package {package.name}")
        return set(resolution.values)

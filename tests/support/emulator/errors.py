"""The API server's failure answers (``Status`` objects), in its own words.

Every part raises these (kmock renders a ``KubernetesError`` as the server sends it), so a client
under test meets the same codes, reasons and messages as on a real cluster.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import kmock


def failure(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    """A Kubernetes ``Status`` failure, rendered by kmock exactly as a real server sends it."""
    return kmock.KubernetesError(status=code, reason=reason, message=message,
                                 details={k: v for k, v in details.items() if v is not None})


def qualified(resource: kmock.resource) -> str:
    return str(resource.plural) if not resource.group else f"{resource.plural}.{resource.group}"


def not_found(resource: kmock.resource, name: str | None) -> kmock.KubernetesError:
    return failure(404, "NotFound", f'{qualified(resource)} "{name}" not found',
                    name=name, group=resource.group, kind=resource.plural)


def conflict(resource: kmock.resource, name: str, why: str) -> kmock.KubernetesError:
    return failure(409, "Conflict",
                    f'Operation cannot be fulfilled on {qualified(resource)} "{name}": {why}',
                    name=name, group=resource.group, kind=resource.plural)


def bad_request(message: str) -> kmock.KubernetesError:
    return failure(400, "BadRequest", message)


@dataclasses.dataclass(frozen=True)
class Cause:
    """One field error of a 422 answer, as in ``Status.details.causes``."""

    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, ...
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def invalid(kind: str, group: str, name: str | None,
             causes: Sequence[Cause]) -> kmock.KubernetesError:
    qualified_kind = f"{kind}.{group}" if group else kind
    text = str(causes[0]) if len(causes) == 1 else f"[{', '.join(map(str, causes))}]"
    return failure(422, "Invalid", f'{qualified_kind} "{name}" is invalid: {text}',
                    name=name, group=group, kind=kind,
                    causes=[{"reason": c.reason, "message": c.message, "field": c.field}
                            for c in causes])

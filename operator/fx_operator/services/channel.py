"""The run channel's requests, independent of transport: the local Unix-socket server and the
broker in a cluster both authenticate the caller into a ``RunGrant`` and then call ``dispatch``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fx_ef import contract
from fx_operator.exceptions import (
    FxError,
    NotFoundError,
    PermissionDeniedError,
    StoreError,
    ValidationError,
)
from fx_operator.services.runs import RunGrant, RunService

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024

Answer = tuple[int, dict[str, Any]]


def _body(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_BODY_BYTES:
        raise ValueError(f"request body larger than {MAX_BODY_BYTES} bytes")
    body = json.loads(raw or b"{}")
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    return body


def dispatch(service: RunService, grant: RunGrant, method: str, path: str, raw: bytes) -> Answer:
    """Answer one channel request; errors become a status and a message without any value."""
    try:
        if method == "POST" and path == contract.CHANNEL_SECRETS_PATH:
            body = _body(raw)
            if "name" not in body or "value" not in body:
                return 400, {"error": "the request needs 'name' and 'value'"}
            version = service.set_secret(grant, body["name"], body["value"],
                                         str(body.get("scope", "project")))
            return 200, {"version": version}
        if method == "GET" and path == contract.CHANNEL_STATE_PATH:
            return 200, {"state": service.get_state(grant)}
        if method == "POST" and path == contract.CHANNEL_STATE_PATH:
            body = _body(raw)
            if "key" not in body or "value" not in body:
                return 400, {"error": "the request needs 'key' and 'value'"}
            return 200, {"state": service.put_state(grant, body["key"], body["value"])}
        return 404, {"error": f"no such channel request: {method} {path}"}
    except ValueError as e:  # includes json.JSONDecodeError
        return 400, {"error": f"bad request: {e}"}
    except ValidationError as e:
        return 400, {"error": str(e)}
    except PermissionDeniedError as e:
        return 403, {"error": str(e)}
    except NotFoundError as e:
        return 404, {"error": str(e)}
    except StoreError as e:
        log.warning("channel request of run %s failed in the store: %s", grant.run_id, e)
        return 503, {"error": f"the store failed: {e}"}
    except FxError as e:
        return 500, {"error": str(e)}

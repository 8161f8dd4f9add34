"""The run channel's requests, independent of transport: the local Unix-socket server and the
broker in a cluster both authenticate the caller into a ``RunGrant`` and then call ``dispatch``.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from fx_ef import contract
from fx_operator.domain import channel_requests
from fx_operator.exceptions import FxError
from fx_operator.services.runs import RunGrant, RunService

log = logging.getLogger(__name__)

#: The largest body read; the transports answer 413 beyond it before reading.
MAX_BODY_BYTES: Final = channel_requests.MAX_BODY_BYTES

Answer = tuple[int, dict[str, Any]]


def dispatch(service: RunService, grant: RunGrant, method: str, path: str, raw: bytes) -> Answer:
    """Answer one channel request; errors become a status and a message without any value.

    Bodies are read strictly (``domain.channel_requests``): a malformed one is a 400 naming the
    field, before the store is touched.
    """
    try:
        if method == "POST" and path == contract.CHANNEL_SECRETS_PATH:
            secret = channel_requests.parse_secret_write(raw)
            version = service.set_secret(grant, secret.name, secret.value, secret.scope)
            return 200, {"version": version}
        if method == "GET" and path == contract.CHANNEL_STATE_PATH:
            return 200, {"state": service.get_state(grant)}
        if method == "POST" and path == contract.CHANNEL_STATE_PATH:
            service.put_state(grant, channel_requests.parse_state_write(raw))
            return 200, {}  # never the state: see state_limits
        return 404, {"error": f"no such channel request: {method} {path}"}
    except ValueError as e:  # the body's own parse (channel_requests), before any error of ours
        return 400, {"error": f"bad request: {e}"}
    except FxError as e:  # the class says which answer (FxError.http_status)
        if e.retry_after is not None:
            log.warning("channel request of run %s failed, may be retried: %s", grant.run_id, e)
            return e.http_status, {"error": f"failed for now, retry: {e}"}
        return e.http_status, {"error": str(e)}

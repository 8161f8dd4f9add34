"""``context.state``: a package's small persistent dict, kept across its runs.

In a run it lives on the operator's side, behind the run's channel, which applies each ``put``
atomically, so two runs writing at once both land, encrypts it at rest, and holds it to limits
(a key's length, a value's size, the package's total size and number of keys): a ``put`` beyond
them raises ``StateLimitError`` naming the key and the limit. A ``put`` answers nothing back.
In local mode it lives in ``ef_state.json`` beside ``ef_env.json``, updated under a file lock.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from fx_ef._owner import RunOwner
    from fx_ef._rundata import RunData


class State:
    """The package's persistent state: ``get()`` the whole dict, ``put(key, value)`` one key."""

    __slots__ = ("_owner",)

    def __init__(self, owner: RunOwner) -> None:
        self._owner = owner

    def get(self) -> dict[str, Any]:
        """The package's state as it is now (a fresh dict each call; ``{}`` before any put)."""
        from fx_ef._errors import StateError

        data = self._owner._load()
        if data.local:
            from fx_ef._local import read_state

            path = _local_state_path(data)
            try:
                return read_state(path)
            except OSError as e:
                raise StateError(f"cannot read the package state {path}: {e.strerror or e}"
                                 ) from None
        answer = self._call(data, "GET", None, "read the package state")
        state = answer.get("state")
        if not isinstance(state, dict):
            raise StateError("cannot read the package state: the channel's answer has no "
                             "state object")
        return state

    def put(self, key: str, value: Any) -> None:
        """Set one key of the state; other keys, also ones another run writes now, stay."""
        from http import HTTPStatus

        from fx_ef._errors import StateError, StateLimitError
        from fx_ef._secrets import _json_value

        if not isinstance(key, str):
            raise TypeError(f"key must be a string, got {type(key).__name__}")
        stored = _json_value(value, f"the state value of {key!r}")
        data = self._owner._load()
        if data.local:
            from fx_ef._local import STATE_WHAT, update_json_object

            path = _local_state_path(data)

            def put(document: dict[str, Any]) -> None:
                document[key] = stored

            try:
                update_json_object(path, STATE_WHAT, put, create=True)
            except OSError as e:
                raise StateError(f"cannot update the package state {path}: {e.strerror or e}"
                                 ) from None
            return
        try:
            self._call(data, "POST", {"key": key, "value": stored},
                       f"update the package state ({key!r})")
        except StateError as e:
            if e.status != HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
                raise
            raise StateLimitError(str(e), status=e.status, server_message=e.server_message
                                  ) from None

    def _call(self, data: RunData, method: str, body: dict[str, Any] | None,
              action: str) -> dict[str, Any]:
        from fx_ef import contract
        from fx_ef._channel import call
        from fx_ef._errors import StateError

        if data.channel is None:
            raise StateError(f"cannot {action}: the package state is not available in this "
                             f"environment (the run's bundle {data.source} has no channel)")
        return call(data.channel, data.run_id, method, contract.CHANNEL_STATE_PATH, body,
                    StateError, action)

    def __repr__(self) -> str:
        return "<fx_ef package state>"


def _local_state_path(data: RunData) -> str:
    from fx_ef import contract

    return os.path.join(os.path.dirname(data.source), contract.LOCAL_STATE_FILE)

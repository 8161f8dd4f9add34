"""``context.secrets``: the run's resolved secrets, and writes at project or platform scope.

``get`` is on every script's hot path: after the first call it is one dict lookup, with no file
read. This module imports only what ``import fx_ef`` already pays for; ``set`` imports the rest.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from fx_ef._owner import RunOwner
    from fx_ef._rundata import RunData

_WRITABLE = ("project", "platform")  # contract.WRITABLE_SCOPES, without importing it here
_CONTAINERS = (dict, list)


class Secrets:
    """The run's secrets, resolved when the run was built: package > project > platform."""

    __slots__ = ("_asked", "_owner", "_values")

    def __init__(self, owner: RunOwner) -> None:
        self._owner = owner
        self._values: dict[str, Any] | None = None  # filled by the context's first load
        self._asked: set[str] = set()  # names asked for but not delivered, reported once each

    def get(self, name: str) -> Any:
        """The value of ``name`` (a JSON value), or ``None`` when no scope has it.

        An empty value (``""``, ``{}``, ``0``, ``false``) is a value, returned as it is. A dict
        or list comes back as a copy, so changing it does not change what later calls see.
        """
        values = self._values
        if values is None:
            values = self._owner._load().secrets
        value = values.get(name)
        if value.__class__ in _CONTAINERS:
            return _copy(value)
        if value is None and name not in values and name not in self._asked:
            self._asked.add(name)  # off the hot path: a delivered name never comes here
            _report_missing(self._owner._environ, name)
        return value

    def set(self, name: str, value: Any, context: str = "project") -> None:
        """Store ``value`` as secret ``name`` at ``context`` scope ("project" or "platform").

        The write is authenticated by the run's channel (in local mode: ef_env.json's layer).
        Afterwards this run's ``get(name)`` returns the new value unless a stronger scope
        (package over project over platform) already holds the name; and the value is
        reported to the executor for masking before this returns.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, got {type(name).__name__}")
        if not name:
            raise ValueError("name must not be empty")
        if context not in _WRITABLE:
            raise ValueError(f"context must be 'project' or 'platform', got {context!r}")
        stored = _json_value(value, f"the value of secret {name!r}")
        data = self._owner._load()
        if data.local:
            _write_local(data, name, stored, context)
        else:
            _write_channel(data, name, stored, context)
        data.record_set(name, stored, context)
        self._owner._secret_written(name, stored)
        _report_for_masking(self._owner._environ, name, stored)

    def __repr__(self) -> str:
        return "<fx_ef secrets (values hidden)>"


def _copy(value: Any) -> Any:
    """A deep copy of a JSON value, without importing ``copy``."""
    if value.__class__ is dict:
        return {key: _copy(item) for key, item in value.items()}
    if value.__class__ is list:
        return [_copy(item) for item in value]
    return value


def _json_value(value: Any, what: str) -> Any:
    """``value`` as JSON gives it back (tuples become lists), or a ``TypeError`` saying why not."""
    import json

    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:  # the messages name types, never the value
        raise TypeError(f"{what} must be JSON-serialisable: {e}") from None
    return json.loads(text)


def _write_channel(data: RunData, name: str, value: Any, scope: str) -> None:
    from fx_ef import contract
    from fx_ef._channel import call
    from fx_ef._errors import PlatformWriteNotAllowedError, SecretWriteError

    if data.channel is None:
        raise SecretWriteError(
            f"cannot write secret {name!r}: secrets cannot be written in this environment "
            f"(the run's bundle {data.source} has no channel to the operator)")
    if scope == "platform" and not data.allow_platform_write:
        raise PlatformWriteNotAllowedError(
            f"cannot write secret {name!r} at platform scope: this run is not allowed to write "
            "platform secrets (the operator's configuration decides; project scope is allowed)")
    call(data.channel, data.run_id, "POST", contract.CHANNEL_SECRETS_PATH,
         {"name": name, "value": value, "scope": scope}, SecretWriteError,
         f"write secret {name!r} at {scope} scope")


def _write_local(data: RunData, name: str, value: Any, scope: str) -> None:
    from fx_ef._errors import SecretWriteError
    from fx_ef._local import update_json_object
    from fx_ef._rundata import LOCAL_LAYERS

    layer = LOCAL_LAYERS[scope]

    def put(document: dict[str, Any]) -> None:
        section = document.setdefault(layer, {})
        if not isinstance(section, dict):
            raise SecretWriteError(f"cannot write secret {name!r}: {layer} in {data.source} "
                                   "is not an object")
        section[name] = value

    try:
        update_json_object(data.source, "the local environment", put, create=False)
    except OSError as e:
        raise SecretWriteError(f"cannot write secret {name!r} into {data.source}: "
                               f"{e.strerror or e}") from None


def _report_missing(environ: Mapping[str, str], name: object) -> None:
    """Tell the executor a name the script asked for that the run did not receive (names
    only: one JSON line on ``FX_MASK_FD``), for the run's result. Best effort: a broken pipe
    costs the report, never the script's ``get``."""
    from fx_ef import contract

    fd_text = environ.get(contract.ENV_MASK_FD)
    if not fd_text or not isinstance(name, str):
        return
    import json
    from contextlib import suppress

    with suppress(OSError, ValueError):
        os.write(int(fd_text), (json.dumps({"missing": name}) + "\n").encode())


def _report_for_masking(environ: Mapping[str, str], name: str, value: Any) -> None:
    """Tell the executor the new value (one JSON line on ``FX_MASK_FD``) so it masks it."""
    from fx_ef import contract

    fd_text = environ.get(contract.ENV_MASK_FD)
    if not fd_text:
        return
    import json

    from fx_ef._errors import SecretWriteError

    stopping = "stopping here so that it cannot be printed unmasked"
    try:
        fd = int(fd_text)
    except ValueError:
        raise SecretWriteError(f"secret {name!r} was stored, but {contract.ENV_MASK_FD}="
                               f"{fd_text!r} is not a file descriptor; {stopping}") from None
    line = json.dumps({"name": name, "value": value}, separators=(",", ":")) + "\n"
    view = memoryview(line.encode())
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        raise SecretWriteError(f"secret {name!r} was stored, but reporting it to the executor "
                               f"for masking failed ({e.strerror or e}); {stopping}") from None

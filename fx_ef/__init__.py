"""The runtime a package script imports: ``from fx_ef import context``.

::

    context.secrets.get("DB_PASS")                  # package > project > platform; None if absent
    context.secrets.set("TOKEN", {"k": "v"}, "project")   # or "platform", where allowed
    context.params.get("package_name")              # also package_id, execution_id
    context.config.get("key"); context.package.name; context.package.id
    context.state.get(); context.state.put("key", "value")
    context.logging.info("...")

Where the data comes from, decided on first use (``import fx_ef`` reads nothing):

* ``$FX_BUNDLE`` set: the run's bundle, a JSON file the run's init step wrote to a tmpfs (format
  in ``fx_ef.contract``). Secrets were resolved when the run was built. Writes and state go over
  the run's authenticated channel; each new secret value is reported on ``$FX_MASK_FD`` (when set)
  so the executor masks it in the output.
* else ``EF_ENV=local``: ``ef_env.json`` in the current directory, as in the original library::

      {"params": {...}, "config": {...},
       "secrets": {...},                 # package scope: wins
       "project_secrets": {...},         # optional, below "secrets"
       "platform_secrets": {...}}        # optional, below both

  so a name resolves from ``secrets``, else ``project_secrets``, else ``platform_secrets``.
  ``params.package_name`` defaults to the directory's name, ``package_id`` to the package name,
  ``execution_id`` to ``"local"``. ``secrets.set`` rewrites the matching layer of ef_env.json
  (atomically, under a lock); the state lives in ``ef_state.json`` beside it. ``context.logging``
  masks the local secrets' values itself.
* else: the first use raises ``NoRunContextError`` (run under ``fxctl run``, or set EF_ENV=local).

The bundle wins when both are set. Errors are in ``fx_ef._errors`` (tree in its docstring).
"""

from fx_ef._context import Context, context, get_param, get_secret
from fx_ef._errors import (
    FxEfError,
    NoRunContextError,
    PlatformWriteNotAllowedError,
    RunDataError,
    SecretWriteError,
    StateError,
    StateLimitError,
)

__all__ = [
    "Context",
    "FxEfError",
    "NoRunContextError",
    "PlatformWriteNotAllowedError",
    "RunDataError",
    "SecretWriteError",
    "StateError",
    "StateLimitError",
    "context",
    "get_param",
    "get_secret",
]

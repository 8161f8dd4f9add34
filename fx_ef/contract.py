"""The pod contract: the paths, environment variables, bundle format and channel protocol shared by
the operator (which builds runs) and the run's own processes (init step, executor, script).

The operator imports these names when it builds a Job or a local run; nothing here imports the
operator. Change a value only with a migration note: running pods and stored results depend on it.

In code, the contract's two moving parts are typed: the bundle is ``fx_ef.run_bundle.RunBundle``
(its one writer ``RunBundle.build``, its one reader ``RunBundle.from_json``), and the init and
executor command lines are built by ``fx_ef.command_lines`` from the ``FLAG_*`` names below, which
``fx_ef.init`` and ``fx_ef.executor`` parse.

Bundle (the run's plaintext, written by the init step to a tmpfs file, mode 0400)::

    {
      "format": 1,
      "run_id": "run-...",
      "package": {"name": "etl", "id": "default/etl", "project": "default"},
      "entrypoint": "main.py",
      "compat": null | "ferris",
      "params": {...},                 # the run's params (package defaults merged with the run's)
      "config": {...},
      "secrets": {"NAME": <JSON value>, ...},           # resolved: package > project > platform
      "scopes": {"NAME": "package" | "project" | "platform", ...},
      "channel": {"url": "unix:/path/sock" | "https://host:port", "token": "..." | null,
                  "token_file": "/path" | null, "ca_file": "/path" | null} | null,
      "allow_platform_write": false
    }

Sealed bundle (what crosses the Kubernetes API or sits on disk)::

    0x01 | nonce (12) | AES-256-GCM(bundle JSON + tag)   associated data: BUNDLE_AAD_PREFIX + run_id

under a one-time 256-bit run key that the init step gets once (from the broker in a pod, on stdin
in a local run) and never writes down.

Channel (``context.secrets.set`` and ``context.state``): HTTP with
``Authorization: Bearer <token>`` and ``X-FX-Run: <run_id>``, JSON bodies:

    POST /v1/secrets  {"name", "value", "scope"}  -> 200 {"version": n}
    GET  /v1/state                                -> 200 {"state": {...}}
    POST /v1/state    {"key", "value"}            -> 200 {} (never the state)
    errors                                        -> 4xx/5xx {"error": "message"}

A state write beyond the operator's limits (a key's length: 400; a value's size, or the package's
total size or number of keys: 413) names the key and the limit.
"""

from __future__ import annotations

from typing import Final

BUNDLE_FORMAT: Final = 1
SEALED_BUNDLE_VERSION: Final = 1
BUNDLE_AAD_PREFIX: Final = b"fx-run-bundle\x00v1\x00"
RUN_KEY_BYTES: Final = 32

# --- environment of the script's process -------------------------------------------------------
ENV_BUNDLE: Final = "FX_BUNDLE"  # path of the decrypted bundle file
# A run pod's bundle is a sealed memory file of its executor: $FX_BUNDLE is this + its fd.
MEMORY_BUNDLE_PREFIX: Final = "/proc/self/fd/"
ENV_RUN_ID: Final = "FX_RUN_ID"
ENV_LOCAL: Final = "EF_ENV"  # "local": read ef_env.json instead of a bundle (original library)
LOCAL_ENV_VALUE: Final = "local"
LOCAL_ENV_FILE: Final = "ef_env.json"
LOCAL_STATE_FILE: Final = "ef_state.json"
ENV_RESULT_FILE: Final = "FX_RESULT_FILE"  # where the executor writes the run's result
# A pipe to the executor: after a successful ``context.secrets.set`` the script writes one line
# ``{"name": ..., "value": ...}`` here, so the executor masks the new value from then on.
ENV_MASK_FD: Final = "FX_MASK_FD"

# --- paths inside a run pod ----------------------------------------------------------------------
POD_SECRETS_DIR: Final = "/run/fx/secrets"  # the executor's default --bundle folder (no volume)
POD_SEALED_BUNDLE: Final = "/run/fx/sealed/bundle"  # the ciphertext, from a Secret or ConfigMap
POD_PACKAGE_DIR: Final = "/opt/fx/package"  # the package's scripts, from a ConfigMap
POD_TOKEN_FILE: Final = "/run/fx/token/token"  # noqa: S105 (a path) — projected, audience-bound service-account token
POD_CA_FILE: Final = "/run/fx/ca/ca.crt"  # the broker's CA
POD_RESULT_FILE: Final = "/dev/termination-log"
BUNDLE_FILE_NAME: Final = "bundle.json"

# --- channel -------------------------------------------------------------------------------------
CHANNEL_SECRETS_PATH: Final = "/v1/secrets"
CHANNEL_STATE_PATH: Final = "/v1/state"
# The init step's one request to the broker: POST, bearer token -> 200 {"key": base64}; any later
# request for the same run is refused (run-once delivery).
BROKER_KEY_PATH: Final = "/v1/runs/{run_id}/key"
ENV_BROKER_URL: Final = "FX_BROKER_URL"
# Where a run pod's token and the broker's CA are mounted (default: POD_TOKEN_FILE, POD_CA_FILE).
ENV_TOKEN_FILE: Final = "FX_TOKEN_FILE"  # noqa: S105 (a variable name)
ENV_CA_FILE: Final = "FX_CA_FILE"
RUN_HEADER: Final = "X-FX-Run"

SCOPES: Final = ("package", "project", "platform")  # precedence order: first wins
WRITABLE_SCOPES: Final = ("project", "platform")

# --- command lines of the run's steps ------------------------------------------------------------
# Built by ``fx_ef.command_lines`` (the operator's Job, ``fxctl run``), parsed by ``fx_ef.init`` and
# ``fx_ef.executor``: one spelling of each flag.
INIT_MODULE: Final = "fx_ef.init"
EXECUTOR_MODULE: Final = "fx_ef.executor"
LOCAL_EXECUTOR_MODULE: Final = "fx_ef.local_executor"  # the executor of a run on a workstation
FLAG_RUN_ID: Final = "--run-id"
FLAG_SEALED: Final = "--sealed"
FLAG_OUT: Final = "--out"
FLAG_KEY_STDIN: Final = "--key-stdin"
FLAG_BROKER: Final = "--broker"
FLAG_TOKEN_FILE: Final = "--token-file"  # noqa: S105 (a flag's name)
FLAG_CA_FILE: Final = "--ca-file"
FLAG_BROKER_WAIT: Final = "--broker-wait"
FLAG_BUNDLE: Final = "--bundle"
FLAG_PACKAGE_DIR: Final = "--package-dir"
FLAG_RESULT: Final = "--result"
FLAG_RESULT_MAX_BYTES: Final = "--result-max-bytes"
FLAG_NO_MASK: Final = "--no-mask"
FLAG_TIMEOUT: Final = "--timeout"
FLAG_GRACE: Final = "--grace"
FLAG_KEEP_BUNDLE: Final = "--keep-bundle"
FLAG_RUNNER_PID: Final = "--runner-pid"

# --- the run's result ----------------------------------------------------------------------------
OUTPUT_TAIL_BYTES: Final = 16 * 1024  # masked tail kept in the result

__all__ = [name for name in dir() if name.isupper()]

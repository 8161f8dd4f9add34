"""Reading a run's data: the bundle a run gets (``FX_BUNDLE``), or ``ef_env.json`` in local mode.

Imported on first use, never by ``import fx_ef``: it pulls in ``json``. Every problem with a file
becomes a ``RunDataError`` that names the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from fx_ef import contract
from fx_ef._errors import NoRunContextError, RunDataError

# Lower rank wins: package > project > platform (contract.SCOPES is in precedence order).
SCOPE_RANK: dict[str, int] = {scope: rank for rank, scope in enumerate(contract.SCOPES)}

# ef_env.json's layer for each scope, in precedence order.
LOCAL_LAYERS: dict[str, str] = {
    "package": "secrets",
    "project": "project_secrets",
    "platform": "platform_secrets",
}

LOCAL_EXECUTION_ID = "local"


class Package:
    """The package the script belongs to: ``context.package.name`` and ``.id``."""

    __slots__ = ("id", "name", "project")

    def __init__(self, name: str, id: str, project: str | None) -> None:
        self.name = name
        self.id = id
        self.project = project

    def __repr__(self) -> str:
        return f"Package(name={self.name!r}, id={self.id!r}, project={self.project!r})"


class ChannelSpec:
    """Where and how the script reaches the operator's side to write secrets and state."""

    __slots__ = ("ca_file", "token", "token_file", "url")

    def __init__(self, url: str, token: str | None, token_file: str | None,
                 ca_file: str | None) -> None:
        self.url = url
        self.token = token
        self.token_file = token_file
        self.ca_file = ca_file


class RunData:
    """Everything the context serves, read once per process from one file."""

    __slots__ = ("allow_platform_write", "channel", "config", "layers", "local", "package",
                 "params", "run_id", "scopes", "secrets", "source")

    def __init__(self, *, source: str, local: bool, run_id: str, package: Package,
                 params: dict[str, Any], config: dict[str, Any], secrets: dict[str, Any],
                 scopes: dict[str, str], channel: ChannelSpec | None,
                 allow_platform_write: bool,
                 layers: dict[str, dict[str, Any]] | None = None) -> None:
        self.source = source  # the file read: the bundle, or ef_env.json
        self.local = local
        self.run_id = run_id
        self.package = package
        self.params = params
        self.config = config
        self.secrets = secrets  # resolved: the winning value of each name
        self.scopes = scopes  # the winning scope of each name
        self.channel = channel
        self.allow_platform_write = allow_platform_write
        self.layers = layers  # local mode: every scope's values, shadowed ones too (for masking)

    def record_set(self, name: str, value: Any, scope: str) -> None:
        """After a successful write: later reads in this run see it if its scope wins."""
        if self.layers is not None:
            self.layers.setdefault(scope, {})[name] = value
        current = self.scopes.get(name)
        if current is None or SCOPE_RANK[scope] <= SCOPE_RANK.get(current, 0):
            self.secrets[name] = value
            self.scopes[name] = scope


def load(environ: Mapping[str, str], cwd: str | None) -> RunData:
    """The run's data from the bundle, else from ef_env.json in local mode; else a clear error."""
    bundle = environ.get(contract.ENV_BUNDLE)
    if bundle:
        return load_bundle(bundle)
    if environ.get(contract.ENV_LOCAL) == contract.LOCAL_ENV_VALUE:
        return load_local(os.path.join(cwd or os.getcwd(), contract.LOCAL_ENV_FILE))
    raise NoRunContextError(
        f"fx_ef has no run to read: ${contract.ENV_BUNDLE} is not set. Run the script under "
        f"`fxctl run`, or set {contract.ENV_LOCAL}={contract.LOCAL_ENV_VALUE} to read "
        f"{contract.LOCAL_ENV_FILE} from the current directory.")


def read_json_object(path: str, what: str) -> dict[str, Any]:
    """A JSON file that must hold an object, or a ``RunDataError`` naming it and the problem."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as e:
        raise RunDataError(f"cannot read {what} {path}: {e.strerror or e}") from None
    return parse_json_object(raw, path, what)


def parse_json_object(raw: bytes, path: str, what: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError; neither quotes the file
        raise RunDataError(f"{what} {path} is not valid JSON: {e}") from None
    except RecursionError:  # the decoder recurses once per level of nesting
        raise RunDataError(f"{what} {path} is nested too deeply to read") from None
    if not isinstance(document, dict):
        raise RunDataError(f"{what} {path} must hold a JSON object, not {_kind(document)}")
    return document


def load_bundle(path: str) -> RunData:
    what = "the run's bundle"
    document = read_json_object(path, what)
    fields = _Fields(document, path, what)
    if document.get("format") != contract.BUNDLE_FORMAT:
        raise RunDataError(f"{what} {path} has format {_shown(document.get('format'))}; this "
                           f"fx_ef reads format {contract.BUNDLE_FORMAT}")
    run_id = fields.string("run_id")
    package = fields.object("package", required=True)
    package_fields = _Fields(package, path, what, prefix="package.")
    name = package_fields.string("name")
    package_id = package_fields.string("id")
    project = package_fields.optional_string("project")
    secrets = fields.object("secrets")
    scopes = fields.object("scopes")
    for secret_name, scope in scopes.items():
        if not isinstance(scope, str) or scope not in SCOPE_RANK:
            raise RunDataError(f"{what} {path}: scopes.{_key(secret_name)} is {_shown(scope)}, "
                               f"expected one of {', '.join(contract.SCOPES)}")
    for secret_name in secrets.keys() - scopes.keys():
        scopes[secret_name] = "package"  # unknown: assume the strongest, so a set never shadows it
    allow_platform_write = document.get("allow_platform_write", False)
    if not isinstance(allow_platform_write, bool):
        raise RunDataError(f"{what} {path}: allow_platform_write must be true or false")
    params = {**fields.object("params"), "package_name": name, "package_id": package_id,
              "execution_id": run_id}
    return RunData(source=path, local=False, run_id=run_id,
                   package=Package(name, package_id, project), params=params,
                   config=fields.object("config"), secrets=secrets, scopes=scopes,
                   channel=_channel(document.get("channel"), path, what),
                   allow_platform_write=allow_platform_write)


def _channel(value: object, path: str, what: str) -> ChannelSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RunDataError(f"{what} {path}: channel must be an object or null, not {_kind(value)}")
    fields = _Fields(value, path, what, prefix="channel.")
    url = fields.string("url")
    if not url.startswith(("unix:/", "https://", "http://")):
        raise RunDataError(f"{what} {path}: channel.url must be unix:/PATH or https://HOST:PORT")
    # The pod's environment may say where its token and CA are mounted; it wins over the bundle.
    return ChannelSpec(url, fields.optional_string("token"),
                       os.environ.get(contract.ENV_TOKEN_FILE) or fields.optional_string(
                           "token_file"),
                       os.environ.get(contract.ENV_CA_FILE) or fields.optional_string("ca_file"))


def load_local(path: str) -> RunData:
    """ef_env.json: ``params``, ``config`` and three layers of secrets (see ``fx_ef``'s docs)."""
    what = f"the local environment ({contract.ENV_LOCAL}={contract.LOCAL_ENV_VALUE})"
    document = read_json_object(path, what)
    fields = _Fields(document, path, what)
    params = fields.object("params")
    layers = {scope: fields.object(key) for scope, key in LOCAL_LAYERS.items()}
    secrets: dict[str, Any] = {}
    scopes: dict[str, str] = {}
    for scope in reversed(contract.SCOPES):  # platform first, so stronger scopes overwrite
        secrets.update(layers[scope])
        scopes.update(dict.fromkeys(layers[scope], scope))
    param_fields = _Fields(params, path, what, prefix="params.")
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    name = param_fields.optional_string("package_name") or folder
    package_id = param_fields.optional_string("package_id") or name
    params.setdefault("package_name", name)
    params.setdefault("package_id", package_id)
    params.setdefault("execution_id", LOCAL_EXECUTION_ID)
    return RunData(source=path, local=True, run_id=LOCAL_EXECUTION_ID,
                   package=Package(name, package_id, None), params=params,
                   config=fields.object("config"), secrets=secrets, scopes=scopes, channel=None,
                   allow_platform_write=True, layers=layers)


class _Fields:
    """Typed access to a document's fields, with errors that say which field of which file."""

    def __init__(self, document: dict[str, Any], path: str, what: str, prefix: str = "") -> None:
        self._document = document
        self._where = f"{what} {path}"
        self._prefix = prefix

    def _error(self, key: str, expected: str, value: object) -> RunDataError:
        found = "nothing (or null)" if value is None else _kind(value)
        return RunDataError(f"{self._where}: {self._prefix}{key} must be {expected}, "
                            f"found {found}")

    def string(self, key: str) -> str:
        value = self._document.get(key)
        if not isinstance(value, str) or not value:
            raise self._error(key, "a non-empty string", value)
        return value

    def optional_string(self, key: str) -> str | None:
        value = self._document.get(key)
        if value is not None and not isinstance(value, str):
            raise self._error(key, "a string or null", value)
        return value

    def object(self, key: str, *, required: bool = False) -> dict[str, Any]:
        value = self._document.get(key)
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise self._error(key, "an object", value)
        return value


def _shown(value: object) -> str:
    """A field's value in a message when it is None, a number or short text (a format, a
    scope), escaped so that it cannot break the line; otherwise its type only."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return "a number"  # repr() of an integer past 4,300 digits would itself raise
    if value is None or (isinstance(value, str | bool | int | float) and len(repr(value)) <= 64):
        return repr(value)
    return _kind(value)


def _key(name: str) -> str:
    """A key in a message: as written when short and printable, else escaped and cut."""
    return name if len(name) <= 128 and name.isprintable() else ascii(name[:64])


def _kind(value: object) -> str:
    """A JSON value's type in words; never the value itself, which may be a secret."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {dict: "an object", list: "an array", str: "a string", int: "a number",
             float: "a number"}
    return names.get(type(value), type(value).__name__)

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
from fx_ef._fields import FieldError, Fields, kind
from fx_ef.run_bundle import BundleChannel, RunBundle

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
        raise RunDataError(f"{what} {path} must hold a JSON object, not {kind(document)}")
    return document


def load_bundle(path: str) -> RunData:
    """The run's data from its bundle, read by the bundle's one reader (``RunBundle``)."""
    what = "the run's bundle"
    document = read_json_object(path, what)
    try:
        bundle = RunBundle.from_dict(document)
    except FieldError as e:
        raise RunDataError(e.located(f"{what} {path}")) from None
    scopes = bundle.scopes
    for secret_name in bundle.secrets.keys() - scopes.keys():
        scopes[secret_name] = "package"  # unknown: assume the strongest, so a set never shadows it
    package = bundle.package
    params = {**bundle.params, "package_name": package.name, "package_id": package.id,
              "execution_id": bundle.run_id}
    return RunData(source=path, local=False, run_id=bundle.run_id,
                   package=Package(package.name, package.id, package.project), params=params,
                   config=bundle.config, secrets=bundle.secrets, scopes=scopes,
                   channel=_channel(bundle.channel),
                   allow_platform_write=bundle.allow_platform_write)


def _channel(channel: BundleChannel | None) -> ChannelSpec | None:
    if channel is None:
        return None
    # The pod's environment may say where its token and CA are mounted; it wins over the bundle.
    return ChannelSpec(channel.url, channel.token,
                       os.environ.get(contract.ENV_TOKEN_FILE) or channel.token_file,
                       os.environ.get(contract.ENV_CA_FILE) or channel.ca_file)


def load_local(path: str) -> RunData:
    """ef_env.json: ``params``, ``config`` and three layers of secrets (see ``fx_ef``'s docs)."""
    what = f"the local environment ({contract.ENV_LOCAL}={contract.LOCAL_ENV_VALUE})"
    document = read_json_object(path, what)
    try:
        return _local_data(document, path)
    except FieldError as e:
        raise RunDataError(e.located(f"{what} {path}")) from None


def _local_data(document: dict[str, Any], path: str) -> RunData:
    fields = Fields(document)
    params = fields.object("params")
    layers = {scope: fields.object(key) for scope, key in LOCAL_LAYERS.items()}
    secrets: dict[str, Any] = {}
    scopes: dict[str, str] = {}
    for scope in reversed(contract.SCOPES):  # platform first, so stronger scopes overwrite
        secrets.update(layers[scope])
        scopes.update(dict.fromkeys(layers[scope], scope))
    param_fields = Fields(params, prefix="params.")
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

"""The run's bundle as a type: what the operator seals for one run, and what the run reads back.

One writer, :meth:`RunBundle.build`, used by the operator's admission of an Execution and by
``fxctl run`` alike; one reader, :meth:`RunBundle.from_json` (:meth:`RunBundle.from_dict` for a
document already parsed), used by the executor and by the script's ``fx_ef.context``. The JSON
form is documented in :mod:`fx_ef.contract`; ``fx_ef.bundle`` seals and opens its bytes.

Every problem is a :class:`FieldError` (a ``ValueError``) naming the field (``package.name``,
``scopes.DB_PASS``) and never quoting a value; an unknown ``format`` is an
:class:`UnknownBundleFormat`.

The types are ``NamedTuple``s: immutable and typed as a frozen dataclass would be, without the
``dataclasses`` import (with ``inspect``, ``ast`` and ``dis``: about 10 ms) on the executor's start,
where ``typing`` is loaded already. Their ``repr`` never shows a secret or a token. Nothing here
is imported by ``import fx_ef``: the script's context reads the bundle on first use.
"""

# No ``from __future__ import annotations`` here: a NamedTuple's string annotations are compiled
# one by one when the class is made (this module's body: 0.62 ms with them, 0.48 ms without,
# medians of 31 interleaved runs).
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from fx_ef import contract
from fx_ef._fields import FieldError, Fields, key_text, kind, shown

__all__ = ["BundleChannel", "BundlePackage", "FieldError", "RunBundle", "UnknownBundleFormat",
           "bundle_json"]

_CHANNEL_SCHEMES = ("unix:/", "https://", "http://")


class UnknownBundleFormat(FieldError):
    """The bundle's ``format`` is not the one this ``fx_ef`` reads."""

    def located(self, document: str) -> str:
        return f"{document} {self}"  # "<document> has format 2; this fx_ef reads format 1"


class BundlePackage(NamedTuple):
    """The package a run belongs to."""

    name: str
    id: str  # "<project>/<name>"
    project: str | None

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> "BundlePackage":
        fields = Fields(document, prefix="package.")
        return cls(fields.string("name"), fields.string("id"), fields.optional_string("project"))


class BundleChannel(NamedTuple):
    """Where and how the script reaches the operator's side (``context.secrets.set``, state)."""

    url: str  # unix:/PATH (a local run) or https://HOST:PORT (the broker)
    token: str | None = None  # a local run's bearer token
    token_file: str | None = None  # a pod's projected service-account token
    ca_file: str | None = None  # the broker's CA

    @classmethod
    def from_value(cls, value: object) -> "BundleChannel | None":
        if value is None:
            return None
        if not isinstance(value, dict):
            raise FieldError("channel", f"channel must be an object or null, not {kind(value)}")
        fields = Fields(value, prefix="channel.")
        url = fields.string("url")
        if not url.startswith(_CHANNEL_SCHEMES):
            raise FieldError("channel.url", "channel.url must be unix:/PATH or https://HOST:PORT")
        return cls(url, fields.optional_string("token"), fields.optional_string("token_file"),
                   fields.optional_string("ca_file"))

    def __repr__(self) -> str:
        token = None if self.token is None else "<hidden>"
        return (f"BundleChannel(url={self.url!r}, token={token}, token_file={self.token_file!r}, "
                f"ca_file={self.ca_file!r})")


class RunBundle(NamedTuple):
    """One run's plaintext: who it is, what to run, and the secrets resolved for it.

    ``secrets`` holds each name's winning value (package > project > platform), ``scopes`` the
    scope it won at. ``entrypoint`` is None only in a bundle that names none: the executor refuses
    such a bundle, the script's context does not read the field.
    """

    run_id: str
    package: BundlePackage
    entrypoint: str | None
    compat: str | None  # "ferris": the original platform's argv convention
    params: dict[str, Any]
    config: dict[str, Any]
    secrets: dict[str, Any]
    scopes: dict[str, str]
    channel: BundleChannel | None
    allow_platform_write: bool

    @classmethod
    def build(cls, *, run_id: str, project: str, package: str, entrypoint: str,
              compat: str | None, params: Mapping[str, Any], config: Mapping[str, Any],
              secrets: Mapping[str, Any], scopes: Mapping[str, str],
              channel: BundleChannel | None, allow_platform_write: bool) -> "RunBundle":
        """The bundle of a run of ``package`` in ``project``: the one writer, for the cluster's
        runs and local runs alike. Checked by the reader's rules, so that what is written is
        what a run can read (``FieldError`` otherwise)."""
        written = cls(run_id, BundlePackage(package, f"{project}/{package}", project),
                      entrypoint, compat, dict(params), dict(config), dict(secrets), dict(scopes),
                      channel, allow_platform_write)
        return cls.from_dict(written.to_dict())

    @classmethod
    def from_json(cls, raw: bytes | str) -> "RunBundle":
        """The reader: a bundle's JSON text, checked field by field."""
        try:
            document = json.loads(raw)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError; neither quotes it
            raise FieldError("", f"is not valid JSON: {e}") from None
        except RecursionError:  # the decoder recurses once per level of nesting
            raise FieldError("", "is nested too deeply to read") from None
        if not isinstance(document, dict):
            raise FieldError("", f"must hold a JSON object, not {kind(document)}")
        return cls.from_dict(document)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> "RunBundle":
        """The reader, for a JSON object already parsed. The dicts are kept, not copied."""
        found = document.get("format")
        if found.__class__ is not int or found != contract.BUNDLE_FORMAT:
            raise UnknownBundleFormat("format", f"has format {shown(found)}; this fx_ef reads "
                                                f"format {contract.BUNDLE_FORMAT}")
        fields = Fields(document)
        run_id = fields.string("run_id")
        package = BundlePackage.from_dict(fields.object("package", required=True))
        secrets = fields.object("secrets")
        scopes = fields.object("scopes")
        for name, scope in scopes.items():
            if scope.__class__ is not str or scope not in contract.SCOPES:
                raise FieldError(f"scopes.{key_text(name)}",
                                 f"scopes.{key_text(name)} is {shown(scope)}, expected one of "
                                 f"{', '.join(contract.SCOPES)}")
        allow_platform_write = fields.boolean("allow_platform_write", False)
        params = fields.object("params")
        config = fields.object("config")
        channel = BundleChannel.from_value(document.get("channel"))
        return cls(run_id, package, fields.optional_string("entrypoint"),
                   fields.optional_string("compat"), params, config, secrets, scopes, channel,
                   allow_platform_write)

    def to_dict(self) -> dict[str, Any]:
        """The bundle's JSON object, fields in the documented order."""
        return {
            "format": contract.BUNDLE_FORMAT,
            "run_id": self.run_id,
            "package": self.package._asdict(),
            "entrypoint": self.entrypoint,
            "compat": self.compat,
            "params": self.params,
            "config": self.config,
            "secrets": self.secrets,
            "scopes": self.scopes,
            "channel": None if self.channel is None else self.channel._asdict(),
            "allow_platform_write": self.allow_platform_write,
        }

    def to_json(self) -> str:
        """The writer's text (``TypeError``/``ValueError`` for a value JSON cannot carry)."""
        return bundle_json(self.to_dict())

    def __repr__(self) -> str:
        return (f"RunBundle(run_id={self.run_id!r}, package={self.package!r}, "
                f"entrypoint={self.entrypoint!r}, secrets=<{len(self.secrets)} hidden>)")


def bundle_json(document: Mapping[str, Any]) -> str:
    """A bundle's JSON text, compact and in UTF-8's own characters."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)

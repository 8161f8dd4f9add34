"""Commands that talk to a cluster: ``fxctl seal``, ``fxctl run PACKAGE -n NS``, ``fxctl operator``.

Sealing happens here, on the client: the plaintext secrets.json never leaves this machine; the
manifest carries only values sealed for their namespace, scope, package and name.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

from fx_operator.cli.progress import phases
from fx_operator.config import Settings
from fx_operator.domain.api_group import API_VERSION, GROUP, VERSION
from fx_operator.domain.conditions import FINAL_PHASES
from fx_operator.domain.retries import RetryPolicy
from fx_operator.domain.scopes import Owner, Scope
from fx_operator.domain.sealing import (
    PUBLIC_KEY_CONFIGMAP,
    PUBLIC_KEY_FIELD,
    SealingPublicKey,
    SealTarget,
)
from fx_operator.domain.secrets_file import parse_secrets_file
from fx_operator.exceptions import FxError


def _kube() -> Any:
    from fx_operator.storage.kube import Kube, load_api_client

    return Kube(load_api_client())


def _public_key(key_file: Path | None, settings: Settings) -> SealingPublicKey:
    if key_file is not None:
        return SealingPublicKey.parse(key_file.read_text())
    kube = _kube()
    config_map = asyncio.run(kube.read_config_map(settings.platform_namespace,
                                                  PUBLIC_KEY_CONFIGMAP))
    if config_map is None or PUBLIC_KEY_FIELD not in (config_map.get("data") or {}):
        raise FxError(f"no sealing key in ConfigMap {settings.platform_namespace}/"
                      f"{PUBLIC_KEY_CONFIGMAP}: is the operator running? (or pass --public-key)")
    return SealingPublicKey.parse(config_map["data"][PUBLIC_KEY_FIELD])


def sealed_manifest(values: dict[str, Any], public_key: SealingPublicKey, *, namespace: str,
                    scope: str, package: str | None, name: str) -> dict[str, Any]:
    """A ScopedSecret whose every value opens only in this namespace, scope, package and name."""
    owner = Owner.of(scope, namespace, package)
    spec: dict[str, Any] = {"scope": owner.scope.value}
    if owner.scope is Scope.PACKAGE:
        spec["package"] = owner.package
    spec["encryptedData"] = {
        key: public_key.seal(SealTarget(namespace, owner.scope.value, owner.package, key), value)
        for key, value in sorted(values.items())}
    return {"apiVersion": API_VERSION, "kind": "ScopedSecret",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


@click.command("seal")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("--namespace", "-n", required=True, help="The project (namespace).")
@click.option("--scope", type=click.Choice([s.value for s in Scope]), default="package",
              show_default=True)
@click.option("--package", default=None, help="The package, for package scope.")
@click.option("--name", default=None, help="The ScopedSecret's name (default from scope).")
@click.option("--public-key", "key_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="The operator's public key (fxseal1:...) in a file; default: "
              f"read ConfigMap {PUBLIC_KEY_CONFIGMAP} from the platform namespace.")
def seal(file: Path, namespace: str, scope: str, package: str | None, name: str | None,
         key_file: Path | None) -> None:
    """Seal a secrets.json into a ScopedSecret manifest (YAML on stdout), safe to commit."""
    raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    values = parse_secrets_file(raw, source=str(file))
    manifest = sealed_manifest(values, _public_key(key_file, Settings()), namespace=namespace,
                               scope=scope, package=package,
                               name=name or (f"{package}-secrets" if package else
                                             f"{scope}-secrets"))
    click.echo(yaml.safe_dump(manifest, sort_keys=False), nl=False)


#: Exit code when ``fxctl run -n`` stops waiting (timeout(1)'s): the run goes on in the cluster.
EXIT_WAIT_TIMEOUT = 124
#: Waiting beyond the script's own timeout: scheduling, the image, the init step, the status.
WAIT_MARGIN_SECONDS = 300
#: The wait when neither the run nor its Package sets a timeout.
DEFAULT_WAIT_SECONDS = 3600


def run_in_cluster(package: str, namespace: str, params: dict[str, Any], follow: bool,
                   timeout: float | None, wait_timeout: float | None = None) -> int:
    """Create an Execution, follow it to the end, print its masked output; its exit code.

    ``wait_timeout``: seconds to wait for the end; default, the run's timeout (``timeout``, else
    the Package's ``timeoutSeconds``) plus a margin, so that a run whose status never ends (an
    operator that is down, say) does not keep the terminal, or a pipeline, forever."""
    kube = _kube()
    body: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "Execution",
                            "metadata": {"generateName": f"{package}-", "namespace": namespace},
                            "spec": {"package": package, "params": params}}
    if timeout:
        body["spec"]["timeoutSeconds"] = int(timeout)
    created = asyncio.run(kube.create_custom("executions", namespace, body))
    name = created["metadata"]["name"]
    click.echo(f"fxctl: execution {namespace}/{name} created", err=True)
    if not follow:
        return 0
    limit = wait_timeout or _default_wait(kube, namespace, package, timeout)
    started = time.monotonic()
    execution = created
    with phases(f"fxctl: execution {namespace}/{name}", limit) as show:
        while ((phase := (execution.get("status") or {}).get("phase")) not in FINAL_PHASES
               and time.monotonic() <= started + limit):
            show(_shown_phase(execution.get("status") or {}), time.monotonic() - started)
            time.sleep(0.5)
            execution = asyncio.run(kube.get_custom("executions", namespace, name))
    if phase not in FINAL_PHASES:
        status = execution.get("status") or {}
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        click.echo(f"fxctl: execution {namespace}/{name} did not end within {limit:g} s "
                   f"(phase {status.get('phase') or 'none yet'}"
                   f"{': ' + str(ready.get('message')) if ready else ''}); it goes on in "
                   f"the cluster: kubectl -n {namespace} get execution {name}", err=True)
        return EXIT_WAIT_TIMEOUT
    status = execution["status"]
    click.echo((status.get("result") or {}).get("outputTail", ""), nl=False)
    tries = int(status.get("tryCount") or 1)
    after = f" after {tries} tries" if tries > 1 else ""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Succeeded":
            click.echo(f"fxctl: {status['phase']}{after}: {condition.get('message')}", err=True)
    return int(status.get("exitCode", 1))


def _shown_phase(status: dict[str, Any]) -> str:
    """The phase while following a run, with its try once a retry began (``Running (try 2)``),
    or the time of the next try while it waits."""
    phase = str(status.get("phase") or "waiting for the operator")
    tries = int(status.get("tryCount") or 1)
    if status.get("nextTryAt"):
        return f"try {tries} failed, try {tries + 1} at {status['nextTryAt']}"
    return f"{phase} (try {tries})" if tries > 1 else phase


def _default_wait(kube: Any, namespace: str, package: str, timeout: float | None) -> float:
    """Each try's time (its timeout plus a margin) for as many tries as the Package's retries
    allow, and the backoffs between them."""
    spec: dict[str, Any] = {}
    # No such Package (the Execution will say so) or not readable: a run's default wait.
    with contextlib.suppress(FxError):
        spec = asyncio.run(kube.get_custom("packages", namespace, package)).get("spec") or {}
    per_try = float(timeout or spec.get("timeoutSeconds") or DEFAULT_WAIT_SECONDS) \
        + WAIT_MARGIN_SECONDS
    policy = RetryPolicy.inherited(spec.get("retries") if isinstance(spec.get("retries"), dict)
                                   else None)
    backoffs = sum(policy.backoff(n).total_seconds() for n in range(1, policy.max_tries))
    return per_try * policy.max_tries + backoffs


def _peering_priority(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """An integer, or ``random``: the replicas of one Deployment cannot be given distinct numbers,
    and kopf pauses all the operators of a peering that share the highest priority."""
    if value.strip().lower() == "random":
        return secrets.randbelow(2**31 - 1) + 1
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither an integer nor 'random'") from None


@click.command("operator")
@click.option("--namespace", "-n", "namespaces", multiple=True,
              help="Watch only these namespaces (repeatable); default: the whole cluster.")
@click.option("--liveness", default="http://0.0.0.0:8080/healthz", show_default=True,
              help="kopf's liveness and readiness endpoint.")
@click.option("--peering", "peering", default=None, metavar="NAME",
              help="Join kopf peering NAME: the highest-priority replica is active, the others "
                   "stand by (needs kopf's peering CRDs). Default: standalone, one replica.")
@click.option("--priority", default="0", show_default=True, callback=_peering_priority,
              help="This replica's peering priority (with --peering): an integer, or `random` for "
                   "a random one, so that the replicas of one Deployment never tie (kopf pauses "
                   "every operator of a tie).")
@click.option("--log-format", type=click.Choice(["plain", "full", "json"]), default="full",
              show_default=True, help="Log lines as text or as JSON (for log collectors).")
@click.option("--verbose", "-v", is_flag=True, help="Log at DEBUG level.")
@click.option("--quiet", "-q", is_flag=True, help="Log only warnings and errors.")
def operator(namespaces: tuple[str, ...], liveness: str, peering: str | None,
             priority: int, log_format: str, verbose: bool, quiet: bool) -> None:
    """Run the operator (settings from FX_* variables; see the chart's values)."""
    import kopf

    import fx_operator.handlers.all  # noqa: F401 (registers the handlers)
    from fx_operator.domain.nesting import RECURSION_LIMIT

    # Any object the API server holds must decode, however deep a tenant made it (see nesting).
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))

    kopf.configure(debug=verbose, verbose=verbose, quiet=quiet,
                   log_format=kopf.LogFormat[log_format.upper()])
    kopf.run(standalone=peering is None, peering_name=peering, priority=priority,
             clusterwide=not namespaces, namespaces=list(namespaces), liveness_endpoint=liveness)


__all__ = ["EXIT_WAIT_TIMEOUT", "GROUP", "VERSION", "operator", "run_in_cluster", "seal",
           "sealed_manifest"]

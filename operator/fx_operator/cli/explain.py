"""``fxctl explain DIR`` or ``fxctl explain PACKAGE -n NS``: which secrets a package's runs
receive, from where, and why — names, scopes and versions only, never a value.

Nothing is decrypted and nothing is written: the store is read for names and versions only (no
master key needed), the scripts are read by the static finder, never run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from fx_operator.config import Settings
from fx_operator.domain.package_definition import package_definition
from fx_operator.domain.secret_needs import NameReport, SecretNeeds, explain, find_in_scripts
from fx_operator.domain.secrets_file import parse_secrets_file
from fx_operator.storage.secret_store import SecretStore


def _chain(settings: Settings, project: str, package: str) -> dict[str, dict[str, int]]:
    """Versions over the package's chain, read without migrating, keys or values."""
    if settings.embedded and not settings.embedded_path.exists():
        return {}
    store = (SecretStore.open_embedded(settings.embedded_path, migrate=False)
             if settings.embedded else
             SecretStore.open_postgres(str(settings.database_url), pool_max_size=1,
                                       migrate=False))
    try:
        with store.transaction() as tx:
            return store.chain_versions(tx, project, package)
    finally:
        store.close()


def _local(target: Path, project: str | None) -> tuple[str, SecretNeeds, dict[str, Any]]:
    from fx_operator.services.local_run import folder_needs, load_package_folder

    folder = load_package_folder(target, project=project)
    chain = _chain(Settings(), folder.project, folder.name)
    if folder.secrets_file is not None:  # imported at the next run: counts as package scope
        for name in parse_secrets_file(folder.secrets_file.read_bytes(),
                                       source=str(folder.secrets_file)):
            chain.setdefault(name, {}).setdefault("package", 0)
    return folder.package_id, folder_needs(folder), chain


def _cluster(package: str, namespace: str) -> tuple[str, SecretNeeds, dict[str, Any]]:
    from fx_operator.storage.kube import Kube, load_api_client

    body = asyncio.run(Kube(load_api_client()).get_custom("packages", namespace, package))
    definition = package_definition(package, body.get("spec") or {})
    settings = Settings()
    needs = SecretNeeds.of(definition.secrets, find_in_scripts(definition.scripts),
                           platform_declared_only=settings.platform_secrets_declared_only)
    return f"{namespace}/{package}", needs, _chain(settings, namespace, package)


def render(package_id: str, needs: SecretNeeds, reports: list[NameReport]) -> list[str]:
    """The text ``fxctl explain`` prints (tested as is)."""
    scope = ("every name of the chain (secrets.all)" if needs.all
             else "declared and found names")
    lines = [f"package {package_id}: runs receive {scope}"]
    for r in reports:
        where = f"{r.scope} v{r.version}" if r.scope else "-"
        if r.version == 0:
            where = f"{r.scope} (secrets.json, not imported yet)"
        flags = [r.origin.value if r.origin else "all"]
        if r.required:
            flags.append("required")
        if r.pinned:
            flags.append(f"pinned to {r.pinned}")
        shadows = ", ".join(f"{s} v{v}" for s, v in r.shadows)
        lines.append(f"  {r.name:<24} {where:<16} [{', '.join(flags)}] {r.why}"
                     + (f"; shadows {shadows}" if shadows else ""))
    if unused := needs.unused():
        lines.append(f"declared but not read literally by any script: {', '.join(unused)}")
    if missing := [r.name for r in reports if not r.delivered and r.origin is not None
                   and r.origin.value != "declared"]:
        lines.append(f"read by the scripts but not delivered: {', '.join(missing)}")
    for place in needs.found.dynamic:
        lines.append(f"dynamic read at {place}: declare the names it needs, or secrets.all")
    lines += [f"unreadable: {problem}" for problem in needs.found.problems]
    return lines


@click.command("explain")
@click.argument("target")
@click.option("--namespace", "-n", default=None,
              help="Explain the Package TARGET of this namespace (the cluster's store).")
@click.option("--project", "-p", default=None, help="A folder's project (default: package.yaml).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per name.")
def explain_command(target: str, namespace: str | None, project: str | None,
                    as_json: bool) -> None:
    """Which secrets a package's runs receive, from which scope and version, what each shadows,
    and why a name is not delivered. Never a value."""
    package_id, needs, chain = (_cluster(target, namespace) if namespace is not None
                                else _local(Path(target), project))
    reports = explain(needs, chain)
    if as_json:
        import json

        click.echo(json.dumps({"package": package_id, "all": needs.all,
                               "names": [r.as_dict() for r in reports],
                               "unused": needs.unused(),
                               "dynamic": [str(p) for p in needs.found.dynamic]}, indent=1))
        return
    click.echo("\n".join(render(package_id, needs, reports)))

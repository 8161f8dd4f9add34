"""``fxctl schedule``: create, list, suspend, resume and trigger Schedules in a cluster.

The spec is checked here as the operator checks it (cron, time zone, params), so a mistake is
one line on the terminal, not a condition found later.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import click

from fx_operator.cli.output import chosen_format, emit, output_option
from fx_operator.cli.run import _params
from fx_operator.domain.api_group import API_VERSION
from fx_operator.domain.schedules import ConcurrencyPolicy, parse_schedule_spec
from fx_operator.exceptions import NotFoundError

POLICIES = click.Choice([p.value for p in ConcurrencyPolicy])


def _kube() -> Any:
    from fx_operator.storage.kube import Kube, load_api_client

    return Kube(load_api_client())


def _read(kube: Any, namespace: str, name: str) -> dict[str, Any]:
    from fx_operator.storage.kube import KubeNotFound

    try:
        found: dict[str, Any] = asyncio.run(kube.get_custom("schedules", namespace, name))
    except KubeNotFound:
        raise NotFoundError(f"no Schedule {namespace}/{name}") from None
    return found


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


namespace_option = click.option("-n", "--namespace", required=True,
                                help="The project (namespace) of the Schedule.")


@click.group()
def schedule() -> None:
    """Run a Package on a cron schedule (a Schedule in the cluster, as a CronJob runs Jobs)."""


@schedule.command()
@click.argument("name")
@namespace_option
@click.option("--package", required=True, help="The Package (in the namespace) to run.")
@click.option("--cron", "expression", required=True,
              help="Five cron fields, or @hourly, @daily, @weekly, @monthly, @yearly.")
@click.option("--time-zone", "--tz", "time_zone", default=None,
              help="IANA time zone the schedule is read in (default UTC).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A run parameter of every Execution (VALUE is JSON if it parses).")
@click.option("--concurrency", type=POLICIES, default="Allow", show_default=True,
              help="While a run is active: run alongside, skip, or replace it.")
@click.option("--starting-deadline", type=click.IntRange(min=0), default=None,
              help="Seconds after which a missed time is skipped, not run late.")
@click.option("--timeout", type=click.IntRange(min=1, max=604800), default=None,
              help="Each Execution's timeout in seconds (default: the Package's).")
@click.option("--keep-succeeded", type=click.IntRange(0, 100), default=3, show_default=True)
@click.option("--keep-failed", type=click.IntRange(0, 100), default=1, show_default=True)
@click.option("--suspend", is_flag=True, help="Create it suspended.")
@click.option("--dry-run", is_flag=True, help="Print the manifest (YAML) instead of creating it.")
def create(name: str, namespace: str, package: str, expression: str, time_zone: str | None,
           params: tuple[str, ...], concurrency: str, starting_deadline: int | None,
           timeout: int | None, keep_succeeded: int, keep_failed: int, suspend: bool,
           dry_run: bool) -> None:
    """Create Schedule NAME that runs PACKAGE at the times of the cron expression."""
    spec: dict[str, Any] = {
        "package": package, "schedule": expression, "concurrencyPolicy": concurrency,
        "suspend": suspend, "successfulExecutionsHistoryLimit": keep_succeeded,
        "failedExecutionsHistoryLimit": keep_failed}
    for key, value in (("timeZone", time_zone), ("startingDeadlineSeconds", starting_deadline),
                       ("timeoutSeconds", timeout)):
        if value is not None:
            spec[key] = value
    if params:
        spec["params"] = _params(params)
    checked = parse_schedule_spec(spec)
    body = {"apiVersion": API_VERSION, "kind": "Schedule",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    if dry_run:
        import yaml

        click.echo(yaml.safe_dump(body, sort_keys=False), nl=False)
        return
    asyncio.run(_kube().create_custom("schedules", namespace, body))
    first = checked.cron.next_after(datetime.now(UTC))
    click.echo(f"schedule {namespace}/{name} created; first run at "
               f"{first.isoformat(timespec='seconds')}" + (" (suspended)" if suspend else ""))


@schedule.command("list")
@namespace_option
@output_option
def list_(namespace: str, output: str, as_json: bool) -> None:
    """The Schedules of a namespace, with their last and next runs."""
    items = asyncio.run(_kube().list_custom("schedules", namespace, ""))
    rows = []
    for item in sorted(items, key=lambda i: i["metadata"]["name"]):
        spec, status = item.get("spec") or {}, item.get("status") or {}
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        rows.append({"name": item["metadata"]["name"], "package": spec.get("package"),
                     "schedule": spec.get("schedule"), "suspend": bool(spec.get("suspend")),
                     "active": status.get("activeCount", 0),
                     "last": _time(status.get("lastScheduleTime")),
                     "next": status.get("nextScheduleTime"),
                     "ready": ready.get("reason") or ""})
    emit(rows, ["name", "package", "schedule", "suspend", "active", "last", "next", "ready"],
         output=chosen_format(output, as_json))


def _set_suspended(name: str, namespace: str, suspended: bool) -> None:
    kube = _kube()
    _read(kube, namespace, name)
    asyncio.run(kube.patch_custom("schedules", namespace, name, {"spec": {"suspend": suspended}}))
    click.echo(f"schedule {namespace}/{name} {'suspended' if suspended else 'resumed'}")


@schedule.command()
@click.argument("name")
@namespace_option
def suspend(name: str, namespace: str) -> None:
    """Make no more Executions until resumed (those running go on)."""
    _set_suspended(name, namespace, True)


@schedule.command()
@click.argument("name")
@namespace_option
def resume(name: str, namespace: str) -> None:
    """Follow the schedule again (the most recent missed time runs once, as after an outage)."""
    _set_suspended(name, namespace, False)


@schedule.command()
@click.argument("name")
@namespace_option
def trigger(name: str, namespace: str) -> None:
    """Run the Schedule's Package once now, as the Schedule would (its params, owned by it)."""
    from fx_operator.services.schedules import execution_body

    kube = _kube()
    found = _read(kube, namespace, name)
    body = execution_body(found["metadata"], parse_schedule_spec(found.get("spec")))
    created = asyncio.run(kube.create_custom("executions", namespace, body))
    click.echo(f"execution {namespace}/{created['metadata']['name']} created "
               f"(kubectl -n {namespace} get execution {created['metadata']['name']})")

"""``fxctl run DIR`` (a package folder, locally) and ``fxctl results [RUN]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from fx_operator.cli.common import existing_secret_service, secret_service
from fx_operator.cli.gc import sweep_leftovers
from fx_operator.cli.output import chosen_format, emit, output_option
from fx_operator.domain.nesting import MAX_DEPTH, text_too_deep
from fx_operator.endpoints.local_channel import LocalChannel
from fx_operator.exceptions import NotFoundError
from fx_operator.services.local_run import LocalRunner, RunOptions, load_package_folder
from fx_operator.services.runs import RunService
from fx_operator.storage.run_records import RunRecord


def _params(pairs: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--param")
        if text_too_deep(value):
            raise click.BadParameter(f"{key}: nested more than {MAX_DEPTH} levels deep; at most "
                                     f"{MAX_DEPTH} are allowed", param_hint="--param")
        params[key] = _param_value(value)
    return params


def _param_value(text: str) -> Any:
    """Strict JSON (no NaN or Infinity, which JSON cannot carry) when it parses, else the text."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError:  # also an integer past Python's conversion limit
        return text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@click.command("run")
@click.argument("target")
@click.option("--project", "-p", default=None, help="The project; default from package.yaml, "
              "else 'default'.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A run parameter (VALUE is JSON if it parses); repeatable.")
@click.option("--no-mask", is_flag=True,
              help="Show real secret values in the output (debugging; the stored result stays "
                   "masked).")
@click.option("--allow-platform-write", is_flag=True,
              help="Let the script write platform-scope secrets.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds before the script is stopped (default: package.yaml's timeout).")
@click.option("--namespace", "-n", default=None,
              help="Run the Package TARGET of this namespace in the cluster (an Execution).")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="In a cluster: wait for the end and print the masked output.")
@click.option("--wait-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="In a cluster: seconds to wait for the end, then exit 124 (the run goes on); "
                   "default: the run's timeout (or the Package's, or an hour) plus 5 minutes.")
def run(target: str, project: str | None, params: tuple[str, ...], no_mask: bool,
        allow_platform_write: bool, timeout: float | None, namespace: str | None,
        follow: bool, wait_timeout: float | None) -> None:
    """Run a package: TARGET is a folder (run here, on the embedded store by default, with its
    secrets.json as package scope) or, with -n, a Package in a cluster.

    The script's output is masked: every secret value it could print shows as ***. The exit
    code is the script's.
    """
    run_params = _params(params)
    if namespace is not None:
        from fx_operator.cli.cluster import run_in_cluster

        code = run_in_cluster(target, namespace, run_params, follow, timeout, wait_timeout)
        click.get_current_context().exit(code)
    folder = Path(target)
    if not folder.is_dir():
        raise click.BadParameter(f"{target!r} is not a package folder (to run a Package in a "
                                 "cluster, pass -n NAMESPACE)", param_hint="TARGET")
    sweep_leftovers()
    package = load_package_folder(folder, project=project)
    if package.renamed_from is not None:
        click.echo(f"fxctl: note: the folder's name {package.renamed_from!r} is not a valid "
                   f"package name; running it as {package.name!r} (set name: in package.yaml "
                   "to choose another)", err=True)
    if no_mask:
        click.echo("fxctl: warning: --no-mask shows real secret values on this terminal "
                   "(the stored result stays masked)", err=True)
    options = RunOptions(params=run_params, mask=not no_mask,
                         allow_platform_write=allow_platform_write, timeout=timeout)
    with secret_service() as service:
        record = LocalRunner(service, channel=LocalChannel).run(package, options)
    scopes = ", ".join(f"{name}<-{entry['scope']} v{entry['version']}"
                       for name, entry in record.manifest.items())
    click.echo(f"fxctl: run {record.run_id} of {record.project}/{record.package}: "
               f"{_outcome(record)} in {record.duration_s:.2f}s"
               f"{'; secrets: ' + scopes if scopes else ''}{_names_noted(record)}", err=True)
    click.get_current_context().exit(record.exit_code)


def _names_noted(record: RunRecord) -> str:
    """The summary's notes on names (never values): unmaskable, and asked for in vain."""
    notes = ""
    if record.unmasked_names:
        notes += f"; too short to mask: {', '.join(record.unmasked_names)}"
    if record.missing_names:
        notes += f"; asked for, not delivered: {', '.join(record.missing_names)}"
    return notes


def _outcome(record: RunRecord) -> str:
    if record.timed_out:
        return f"timed out (exit {record.exit_code})"
    if record.signal:
        return f"killed by {record.signal} (exit {record.exit_code})"
    return f"exit {record.exit_code}"


@click.command("results")
@click.argument("run_id", required=False)
@click.option("--project", "-p", default=None)
@click.option("--package", default=None)
@click.option("--limit", default=20, show_default=True)
@output_option
def results(run_id: str | None, project: str | None, package: str | None, limit: int,
            output: str, as_json: bool) -> None:
    """Show the stored result of RUN_ID (masked output, secret manifest), or list recent runs."""
    output = chosen_format(output, as_json)
    with existing_secret_service() as service:
        if service is None:
            if run_id is not None:
                raise NotFoundError(f"no run {run_id!r}: there is no store yet")
            emit([], [], output=output)
            return
        runs = RunService(service)
        if run_id is None:
            emit([_summary(r) for r in runs.recent(project=project, package=package,
                                                   limit=limit)],
                 ["run", "project", "package", "exit", "started", "duration"], output=output,
                 name_column="run")
            return
        record = runs.result(run_id)
    if output != "table":
        emit([{**_summary(record), "signal": record.signal, "timed_out": record.timed_out,
               "finished": record.finished_at, "manifest": record.manifest,
               "unmasked_names": list(record.unmasked_names),
               "missing_names": list(record.missing_names),
               "output_tail": record.output_tail,
               "output_truncated": record.output_truncated}], [], output=output,
             name_column="run")
        return
    click.echo(f"run:      {record.run_id}\npackage:  {record.project}/{record.package}\n"
               f"outcome:  {_outcome(record)}\nstarted:  {record.started_at.isoformat()}\n"
               f"duration: {record.duration_s:.3f}s")
    click.echo("secrets:")
    for name, entry in record.manifest.items():
        click.echo(f"  {name}: {entry['scope']} v{entry['version']}")
    click.echo("output (masked" + (", last part only" if record.output_truncated else "") + "):")
    click.echo(record.output_tail, nl=False)


def _summary(record: RunRecord) -> dict[str, Any]:
    return {"run": record.run_id, "project": record.project, "package": record.package,
            "exit": record.exit_code, "started": record.started_at,
            "duration": f"{record.duration_s:.2f}s"}

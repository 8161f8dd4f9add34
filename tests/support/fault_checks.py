"""What every fault test checks once its fault is over: each run ended well, exactly once, and the
canary showed nowhere (P1, P2, P4, P6 in ``DESIGN.md``)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from fx_operator.domain.job_spec import job_name
from fx_operator.services.run_keys import ACTION_DELIVER, ACTION_REFUSED

from support.cluster import Cluster, cluster
from support.kube_emulator import KubeEmulator
from support.operator_process import ProcessCluster
from support.scenarios import run_closed


def run_actions(dsn: str, run_id: str) -> list[str]:
    """The audited actions of one run, oldest first (registered, resolved, delivered...)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT action FROM audit WHERE run_id = %s ORDER BY id",
                            (run_id,)).fetchall()
    return [str(row[0]) for row in rows]


def assert_ran_once(k8s: Cluster, dsn: str, namespace: str, name: str, output: str, *,
                    timeout: float | None = None) -> dict[str, Any]:
    """The Execution Succeeded with ``output``, from one Job, one pod, and one delivery of its
    run's key (no refused second claim); its run is closed. Returns its status."""
    try:
        status: dict[str, Any] = k8s.finished(namespace, name, timeout)["status"]
    except AssertionError as e:
        raise AssertionError(f"{e}\n{_where_it_stands(k8s, namespace, name)}") from None
    assert status["phase"] == "Succeeded", (name, status)
    assert output in status["result"]["outputTail"], (name, status["result"])
    jobs = k8s.batch.list_namespaced_job(namespace, label_selector=f"fx.dev/execution={name}")
    assert [j.metadata.name for j in jobs.items] == [job_name(name)], name
    pods = k8s.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name(name)}")
    assert len(pods.items) == 1, (name, [p.metadata.name for p in pods.items])
    actions = run_actions(dsn, status["runId"])
    assert actions.count(ACTION_DELIVER) == 1, (name, actions)
    assert ACTION_REFUSED not in actions, (name, actions)
    k8s.wait_for(lambda: run_closed(dsn, status["runId"]), f"run {status['runId']} closed")
    return status


def _where_it_stands(k8s: Cluster, namespace: str, name: str) -> str:
    """An unfinished run as ``kubectl describe`` would show it: its status, Job and pods."""
    execution = k8s.get("executions", namespace, name).get("status")
    jobs = k8s.batch.list_namespaced_job(namespace, label_selector=f"fx.dev/execution={name}")
    pods = k8s.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name(name)}")
    return "\n".join([f"status: {execution}",
                      *(f"job {j.metadata.name}: {j.status}" for j in jobs.items),
                      *(f"pod {p.metadata.name}: {p.status}" for p in pods.items)])


def assert_nowhere(canary: str, *places: tuple[str, str | bytes]) -> None:
    """Neither the canary nor its base64 is in any of the ``(where, text)`` given."""
    forms = (canary, base64.b64encode(canary.encode()).decode())
    for where, text in places:
        blob = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        for form in forms:
            assert form not in blob, f"the canary leaked into {where}"


__all__ = ["assert_nowhere", "assert_ran_once", "run_actions"]


@contextmanager
def cluster_with_a_package(folder: Path, dsn: str, dump: Callable[[], bytes], *, namespace: str,
                           package: str, script: str, canary: str,
                           emulator: KubeEmulator | None = None,
                           operator_token: str | None = None,
                           package_spec: dict[str, Any] | None = None,
                           **settings: str) -> Iterator[ProcessCluster]:
    """A cluster whose operator is a process, with one Package whose package-scope secret is
    ``canary``, both ready (``package_spec``: more of the Package's spec); afterwards the
    canary must show nowhere (objects, logs, the runs' output, the database ``dump``)."""
    extra: dict[str, Any] = dict(settings)  # FX_* settings only (mypy: not ``watched``)
    with cluster(folder, dsn, emulator=emulator, operator_token=operator_token,
                 kind=ProcessCluster, **extra) as machine:
        assert isinstance(machine, ProcessCluster)
        machine.package(namespace, package, {"main.py": script}, **(package_spec or {}))
        machine.sealed_secret(namespace, f"{package}-secrets", {"CANARY": canary}, "package",
                              package=package)
        machine.ready("packages", namespace, package)
        machine.ready("scopedsecrets", namespace, f"{package}-secrets")
        yield machine
        assert_nowhere(canary, ("the cluster's objects, the logs and the runs' output",
                                machine.everything_seen()), ("the database", dump()))

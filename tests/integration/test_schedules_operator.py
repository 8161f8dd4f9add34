"""Schedules on the emulated cluster, the operator in this process and its clock movable: each
scheduled minute makes its Execution once, in every situation CronJob users know.

Time is moved, never waited for (``support.clock``): the operator looks at each Schedule at least
every 0.5 s here (``FX_SCHEDULE_RECHECK_SECONDS``), so a jump of the clock is acted on at once.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fx_operator.domain.api_group import GROUP, VERSION
from support.clock import MovableClock, schedule_clock
from support.cluster import Cluster, cluster
from support.postgres import PostgresServer
from support.processes import fxctl
from support.scenarios import package_secrets

NS = "team-a"
CANARY = "sched-canary-7e21c4"
SCRIPT = ("from fx_ef import context\nprint('run', context.params.get('n'), "
          "context.secrets.get('CANARY_PACKAGE'))\n")


@pytest.fixture(scope="module")
def k8s(tmp_path_factory: pytest.TempPathFactory,
        postgres_server: PostgresServer) -> Iterator[Cluster]:
    dsn = postgres_server.create_database("schedules")
    with cluster(tmp_path_factory.mktemp("cluster"), dsn) as machine:
        machine.package(NS, "tick", {"main.py": SCRIPT})
        machine.sealed_secret(NS, "tick-secrets", package_secrets(CANARY), "package",
                              package="tick")
        machine.ready("packages", NS, "tick")
        machine.ready("scopedsecrets", NS, "tick-secrets")
        yield machine
        assert CANARY not in machine.everything_seen()
        assert CANARY not in postgres_server.dump("schedules").decode(errors="replace")
    postgres_server.drop_database("schedules")


@pytest.fixture
def clock(k8s: Cluster) -> Iterator[MovableClock]:
    """The movable clock; the test's Schedules are deleted after it (their daemons stop)."""
    before = {s["metadata"]["name"] for s in _schedules(k8s)}
    with schedule_clock() as moving:
        yield moving
        for name in {s["metadata"]["name"] for s in _schedules(k8s)} - before:
            k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, "schedules", name)
        k8s.wait_for(lambda: {s["metadata"]["name"] for s in _schedules(k8s)} <= before,
                     "the test's Schedules to be deleted")


def _schedules(k8s: Cluster) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = k8s.custom.list_namespaced_custom_object(
        GROUP, VERSION, NS, "schedules")["items"]
    return found


def _made(k8s: Cluster, schedule: str) -> list[dict[str, Any]]:
    items = k8s.custom.list_namespaced_custom_object(
        GROUP, VERSION, NS, "executions", label_selector=f"{GROUP}/schedule={schedule}")["items"]
    return sorted(items, key=lambda e: e["metadata"]["name"])


def _name(schedule: str, minute: datetime) -> str:
    return f"{schedule}-{int(minute.timestamp()) // 60}"


def _minutes(k8s: Cluster, clock: MovableClock, schedule: str, count: int) -> list[datetime]:
    """Move the clock over ``count`` minute boundaries, each acted on before the next."""
    minutes = []
    for _ in range(count):
        minute = clock.just_after_next_minute()
        minutes.append(minute)
        k8s.wait_for(lambda m=minute: _name(schedule, m) in {  # type: ignore[misc]
            e["metadata"]["name"] for e in _made(k8s, schedule)}, f"the run of {minute}")
    return minutes


def _status(k8s: Cluster, name: str) -> dict[str, Any]:
    status: dict[str, Any] = k8s.get("schedules", NS, name).get("status") or {}
    return status


def test_every_minute_makes_one_execution_per_minute(k8s: Cluster, clock: MovableClock) -> None:
    k8s.schedule(NS, "every", "tick", "* * * * *", params={"n": 7},
                 successfulExecutionsHistoryLimit=10)
    minutes = _minutes(k8s, clock, "every", 3)
    made = _made(k8s, "every")
    assert [e["metadata"]["name"] for e in made] == [_name("every", m) for m in minutes]
    for execution in made:
        status = k8s.finished(NS, execution["metadata"]["name"])["status"]
        assert status["phase"] == "Succeeded", status
        assert "run 7 ***" in status["result"]["outputTail"]
        assert execution["spec"] == {"package": "tick", "params": {"n": 7}}
    k8s.wait_for(lambda: _status(k8s, "every").get("activeCount") == 0, "no active run")
    status = _status(k8s, "every")
    assert status["lastScheduleTime"] == minutes[-1].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status["lastExecution"] == _name("every", minutes[-1])
    assert len(k8s.events(NS, "every", "ExecutionCreated")) == 3


def test_forbid_skips_while_one_runs_and_replace_stops_it(k8s: Cluster, clock: MovableClock,
                                                          tmp_path: Path) -> None:
    flag = tmp_path / "release"
    k8s.package(NS, "slow", {"main.py": (
        f"import pathlib, time\nwhile not pathlib.Path({str(flag)!r}).exists():\n"
        "    time.sleep(0.05)\nprint('released')\n")})
    k8s.ready("packages", NS, "slow")
    k8s.schedule(NS, "forbid", "slow", "* * * * *", concurrencyPolicy="Forbid")
    first = _minutes(k8s, clock, "forbid", 1)[0]
    k8s.wait_for(lambda: (k8s.get("executions", NS, _name("forbid", first)).get("status") or {})
                 .get("phase") == "Running", "the first run to start")
    skipped = clock.just_after_next_minute()
    skip_events = k8s.events(NS, "forbid", "RunSkipped")
    assert any("concurrencyPolicy is Forbid" in e["message"] for e in skip_events)
    assert [e["metadata"]["name"] for e in _made(k8s, "forbid")] == [_name("forbid", first)]

    k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "schedules", "forbid", {
        "spec": {"concurrencyPolicy": "Replace"}})
    replacing = _minutes(k8s, clock, "forbid", 1)[0]
    assert replacing > skipped
    k8s.events(NS, "forbid", "ExecutionReplaced")
    k8s.wait_for(lambda: [e["metadata"]["name"] for e in _made(k8s, "forbid")] == [
        _name("forbid", replacing)], "the first run to be deleted")
    flag.touch()
    assert k8s.finished(NS, _name("forbid", replacing))["status"]["phase"] == "Succeeded"
    k8s.wait_for(lambda: _status(k8s, "forbid").get("activeCount") == 0, "no active run")


def test_suspend_then_resume_catches_up_once(k8s: Cluster, clock: MovableClock) -> None:
    k8s.schedule(NS, "pausable", "tick", "* * * * *", suspend=True)
    k8s.wait_for(lambda: any(c.get("reason") == "Suspended"
                             for c in _status(k8s, "pausable").get("conditions") or []),
                 "the Suspended condition")
    for _ in range(3):
        clock.just_after_next_minute()
    k8s.wait_for(lambda: _status(k8s, "pausable").get("nextScheduleTime", "") >
                 clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"), "a look after the last jump")
    assert _made(k8s, "pausable") == []
    k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "schedules", "pausable", {
        "spec": {"suspend": False}})
    latest = clock.now().replace(second=0, microsecond=0)
    k8s.wait_for(lambda: _made(k8s, "pausable"), "the catch-up run")
    assert [e["metadata"]["name"] for e in _made(k8s, "pausable")] == [_name("pausable", latest)]
    created = k8s.events(NS, "pausable", "ExecutionCreated")
    assert "2 earlier missed time(s) not run" in created[0]["message"]


def test_after_an_outage_one_catch_up_within_the_deadline(k8s: Cluster,
                                                          clock: MovableClock) -> None:
    k8s.schedule(NS, "outage", "tick", "* * * * *", startingDeadlineSeconds=600)
    first = _minutes(k8s, clock, "outage", 1)[0]
    k8s.stop_operator()
    try:
        clock.jump_to(first + timedelta(minutes=5, seconds=2))
    finally:
        k8s.start_operator()
    latest = first + timedelta(minutes=5)
    k8s.wait_for(lambda: len(_made(k8s, "outage")) == 2, "the catch-up run")
    assert [e["metadata"]["name"] for e in _made(k8s, "outage")] == [
        _name("outage", first), _name("outage", latest)]
    k8s.stop_operator()  # restarted around a schedule time: still exactly one each
    k8s.start_operator()
    k8s.wait_for(lambda: _status(k8s, "outage").get("nextScheduleTime"), "a look")
    assert len(_made(k8s, "outage")) == 2

    k8s.stop_operator()  # back 30 s after a minute, with a deadline of 10 s: that minute is lost
    try:
        k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "schedules", "outage", {
            "spec": {"startingDeadlineSeconds": 10}})
        clock.just_after_next_minute(seconds=30)
    finally:
        k8s.start_operator()
    skipped = k8s.events(NS, "outage", "RunSkipped")
    assert any("past startingDeadlineSeconds=10" in e["message"] for e in skipped)
    assert len(_made(k8s, "outage")) == 2


def test_history_limits_prune_the_oldest(k8s: Cluster, clock: MovableClock) -> None:
    k8s.schedule(NS, "pruned", "tick", "* * * * *", successfulExecutionsHistoryLimit=1)
    minutes = _minutes(k8s, clock, "pruned", 3)
    k8s.wait_for(lambda: [e["metadata"]["name"] for e in _made(k8s, "pruned")] == [
        _name("pruned", minutes[-1])], "the older runs to be pruned")


def test_a_bad_schedule_is_refused_by_field_and_the_rest_is_served(k8s: Cluster,
                                                                  clock: MovableClock) -> None:
    k8s.schedule(NS, "bad", "tick", "61 * * * *")
    k8s.schedule(NS, "badzone", "tick", "@daily", timeZone="Mars/Olympus")
    for name, message in (("bad", "spec.schedule"), ("badzone", "spec.timeZone")):
        events = k8s.events(NS, name, "InvalidSpec")
        assert message in events[0]["message"]
        ready = next(c for c in _status(k8s, name)["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    k8s.assert_still_serving(NS)


def _fxctl(*args: str) -> subprocess.CompletedProcess[str]:
    """fxctl as a user runs it (a process), on the cluster's kubeconfig."""
    return fxctl(list(args), env={"KUBECONFIG": os.environ["KUBECONFIG"]})


def test_the_cli_creates_lists_suspends_resumes_and_triggers(k8s: Cluster,
                                                             clock: MovableClock) -> None:
    bad = _fxctl("schedule", "create", "cli", "-n", NS, "--package", "tick", "--cron", "* * *")
    assert bad.returncode == 2 and "spec.schedule: '* * *': five fields" in bad.stderr
    dry = _fxctl("schedule", "create", "cli", "-n", NS, "--package", "tick", "--cron",
                 "@hourly", "--tz", "Europe/Berlin", "--param", "n=3", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert yaml.safe_load(dry.stdout)["spec"]["params"] == {"n": 3}
    made = _fxctl("schedule", "create", "cli", "-n", NS, "--package", "tick", "--cron",
                  "@hourly", "--tz", "Europe/Berlin", "--param", "n=3", "--concurrency",
                  "Forbid")
    assert made.returncode == 0 and "first run at" in made.stdout, made.stderr
    k8s.wait_for(lambda: _status(k8s, "cli").get("nextScheduleTime"), "the first look")
    listed = json.loads(_fxctl("schedule", "list", "-n", NS, "-o", "json").stdout)
    row = next(r for r in listed if r["name"] == "cli")
    assert (row["schedule"], row["suspend"], row["ready"]) == ("@hourly", False, "Scheduled")

    assert "suspended" in _fxctl("schedule", "suspend", "cli", "-n", NS).stdout
    assert k8s.get("schedules", NS, "cli")["spec"]["suspend"] is True
    assert "resumed" in _fxctl("schedule", "resume", "cli", "-n", NS).stdout
    assert k8s.get("schedules", NS, "cli")["spec"]["suspend"] is False

    triggered = _fxctl("schedule", "trigger", "cli", "-n", NS)
    assert triggered.returncode == 0, triggered.stderr
    name = triggered.stdout.split()[1].split("/")[1]
    status = k8s.finished(NS, name)["status"]
    assert status["phase"] == "Succeeded" and "run 3 ***" in status["result"]["outputTail"]
    assert _made(k8s, "cli")[0]["metadata"]["ownerReferences"][0]["name"] == "cli"
    missing = _fxctl("schedule", "trigger", "nope", "-n", NS)
    assert missing.returncode == 1 and "no Schedule team-a/nope" in missing.stderr

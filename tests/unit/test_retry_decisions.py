"""Retries, pure: the policy an Execution inherits, the backoff, what is retried, the names of a
try's run and Job, and what a failed pod means for an Execution with retries left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fx_operator.domain import job_spec
from fx_operator.domain.conditions import Reason
from fx_operator.domain.execution_status import progress
from fx_operator.domain.package_definition import package_definition
from fx_operator.domain.retries import (
    RetryPolicy,
    awaiting_next_try,
    check_retries,
    current_try,
    seconds_until_next_try,
    tries_of,
    try_ended,
    try_to_admit,
)
from fx_operator.domain.schedules import parse_schedule_spec
from fx_operator.exceptions import ValidationError
from fx_operator.services.schedules import execution_body


def test_each_field_comes_from_the_first_layer_that_sets_it() -> None:
    assert RetryPolicy.inherited(None, None) == RetryPolicy(limit=0, backoff_seconds=10)
    assert RetryPolicy.inherited({"limit": 2}, {"limit": 5, "backoffSeconds": 30}) == \
        RetryPolicy(limit=2, backoff_seconds=30)
    assert RetryPolicy.inherited({}, {"backoffSeconds": 0}) == RetryPolicy(0, 0)
    assert RetryPolicy(limit=3).max_tries == 4


def test_the_backoff_doubles_after_each_failure_and_never_exceeds_an_hour() -> None:
    policy = RetryPolicy(limit=10, backoff_seconds=10)
    assert [policy.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert policy.backoff(10) == timedelta(hours=1)
    assert RetryPolicy(limit=1, backoff_seconds=0).backoff(5) == timedelta(0)


@pytest.mark.parametrize("reason", [Reason.SCRIPT_FAILED, Reason.POD_FAILED,
                                    Reason.DELIVERY_FAILED, Reason.DEADLINE_EXCEEDED])
def test_runs_that_failed_are_retried_until_the_limit(reason: Reason) -> None:
    policy = RetryPolicy(limit=2)
    assert policy.next_try(1, reason) == 2
    assert policy.next_try(2, reason) == 3
    assert policy.next_try(3, reason) is None


@pytest.mark.parametrize("reason", [Reason.SECRET_MISSING, Reason.PACKAGE_NOT_READY,
                                    Reason.PACKAGE_NOT_FOUND, Reason.INVALID_SPEC,
                                    Reason.ALL_SECRETS_FORBIDDEN, Reason.API_ERROR])
def test_refusals_at_admission_are_final(reason: Reason) -> None:
    assert RetryPolicy(limit=5).next_try(1, reason) is None


def test_bad_retries_are_refused_naming_the_field() -> None:
    problems = check_retries({"limit": 11, "backoffSeconds": -1, "times": 2}, "spec.retries")
    assert sorted(p.where for p in problems) == [
        "spec.retries.backoffSeconds", "spec.retries.limit", "spec.retries.times"]
    assert [str(p) for p in check_retries(True, "spec.retries")] == [
        "spec.retries: must be an object: {limit, backoffSeconds}"]
    assert check_retries({"limit": True}, "spec.retries")  # a bool is not a count
    assert check_retries({"limit": 10, "backoffSeconds": 3600}, "spec.retries") == []
    with pytest.raises(ValidationError, match=r"spec\.retries\.limit"):
        package_definition("p", {"scripts": [{"name": "main.py", "content": "x"}],
                                 "retries": {"limit": 99}})
    with pytest.raises(ValidationError, match=r"spec\.retries\.backoffSeconds"):
        parse_schedule_spec({"package": "p", "schedule": "@hourly",
                             "retries": {"backoffSeconds": 99999}})


def test_the_package_and_the_schedule_carry_the_default() -> None:
    definition = package_definition("p", {"scripts": [{"name": "main.py", "content": "x"}],
                                          "retries": {"limit": 2}})
    assert definition.retries == {"limit": 2}
    spec = parse_schedule_spec({"package": "p", "schedule": "@hourly",
                                "retries": {"limit": 1, "backoffSeconds": 5}})
    made = execution_body({"namespace": "team-a", "name": "nightly", "uid": "u-1"}, spec,
                          name="nightly-1")
    assert made["spec"]["retries"] == {"limit": 1, "backoffSeconds": 5}
    plain = parse_schedule_spec({"package": "p", "schedule": "@hourly"})
    assert "retries" not in execution_body(
        {"namespace": "team-a", "name": "nightly", "uid": "u-1"}, plain, name="n")["spec"]


def test_the_first_try_keeps_its_names_and_later_tries_get_names_no_first_try_has() -> None:
    assert job_spec.run_id("uid-1") == job_spec.run_id("uid-1", 1) == "run-uid-1"
    assert job_spec.job_name("nightly") == job_spec.job_name("nightly", 1) == "fx-run-nightly"
    assert job_spec.sealed_secret_name("nightly") == "fx-sealed-nightly"
    assert job_spec.run_id("uid-1", 2) == "run-uid-1-2"
    assert job_spec.job_name("nightly", 2) == "fx-run2-nightly"
    assert job_spec.sealed_secret_name("nightly", 3) == "fx-sealed3-nightly"
    # An Execution named like another's later try never shares its Job.
    assert job_spec.job_name("2-nightly") != job_spec.job_name("nightly", 2)
    assert job_spec.job_name("nightly-2") != job_spec.job_name("nightly", 2)
    long = "x" * 80
    names = {job_spec.job_name(long, n) for n in (1, 2, 3)}
    assert len(names) == 3 and all(len(n) <= 63 for n in names)
    plan = job_spec.RunPlan(namespace="team-a", execution="nightly", execution_uid="uid-1",
                            package="etl", run_id="run-uid-1-2", entrypoint="main.py",
                            script_names=("main.py",), try_number=2)
    settings = job_spec.RunPodSettings(runtime_image="r:1", broker_url="https://b",
                                       broker_audience="a", broker_ca_configmap="ca")
    job = job_spec.run_job(plan, settings)
    assert job["metadata"]["name"] == "fx-run2-nightly"
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["sealed"]["secret"]["secretName"] == "fx-sealed2-nightly"
    assert job_spec.sealed_bundle_secret(plan, "c2VhbGVk")["metadata"]["name"] == \
        "fx-sealed2-nightly"


def test_the_tries_are_read_from_the_status_alone() -> None:
    assert tries_of({}) == [] and current_try({}) == 1 and try_to_admit({}) == 1
    legacy = {"phase": "Running", "runId": "run-u", "jobName": "fx-run-e"}  # an older operator
    assert tries_of(legacy) == [{"try": 1, "runId": "run-u", "jobName": "fx-run-e",
                                 "phase": "Pending"}]
    waiting = {"phase": "Running", "nextTryAt": "2030-01-01T00:00:10Z", "runId": "run-u",
               "tries": [{"try": 1, "runId": "run-u", "phase": "Failed"}]}
    assert awaiting_next_try(waiting) and try_ended(waiting)
    assert try_to_admit(waiting) is None  # a resume admits nothing: the next try waits
    assert current_try(waiting) == 1
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert seconds_until_next_try(waiting, now) == 10
    assert seconds_until_next_try(waiting, now + timedelta(minutes=1)) == 0
    running = {"phase": "Running", "tries": [{"try": 1, "phase": "Failed"},
                                             {"try": 2, "phase": "Running"}]}
    assert try_to_admit(running) == 2 and not try_ended(running)
    assert not awaiting_next_try({**waiting, "phase": "Failed"})


def _execution(status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "e", "namespace": "team-a", "uid": "u", "generation": 1},
            "spec": {"package": "p"}, "status": status}


def _pod(exit_code: int) -> dict[str, Any]:
    done = {"exitCode": 0, "startedAt": "2030-01-01T00:00:00Z",
            "finishedAt": "2030-01-01T00:00:01Z"}
    return {"status": {
        "initContainerStatuses": [{"state": {"terminated": done}}],
        "containerStatuses": [{"state": {"terminated": {
            **done, "exitCode": exit_code, "finishedAt": "2030-01-01T00:00:05Z"}}}]}}


ADMITTED = {"phase": "Pending", "runId": "run-u", "jobName": "fx-run-e", "tryCount": 1,
            "tries": [{"try": 1, "runId": "run-u", "jobName": "fx-run-e", "phase": "Pending"}],
            "steps": [{"name": "Admitted", "phase": "Succeeded"},
                      {"name": "SecretsDelivered", "phase": "Pending"},
                      {"name": "Script", "phase": "Pending"}]}


def test_a_failed_try_with_retries_left_waits_for_the_next() -> None:
    status = {**ADMITTED, "retryPolicy": {"limit": 2, "backoffSeconds": 30}}
    outcome = progress(_execution(status), _pod(exit_code=4))
    assert outcome is not None
    new = outcome.status
    assert new["phase"] == "Running" and "completionTime" not in new
    assert new["tries"] == [{"try": 1, "runId": "run-u", "jobName": "fx-run-e",
                             "phase": "Failed", "reason": "ScriptFailed", "exitCode": 4,
                             "startedAt": "2030-01-01T00:00:00Z",
                             "finishedAt": "2030-01-01T00:00:05Z"}]
    assert 0 < seconds_until_next_try(new, datetime.now(UTC)) <= 30
    succeeded = next(c for c in new["conditions"] if c["type"] == "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("Unknown", "Retrying")
    assert "try 1 of 3 failed" in succeeded["message"]
    assert [e.reason for e in outcome.events] == [Reason.SCRIPT_FAILED]
    # The try's end is recorded: its pod's later events change nothing.
    assert progress(_execution(new), _pod(exit_code=4)) is None


def test_without_retries_a_failed_try_ends_the_execution() -> None:
    outcome = progress(_execution(ADMITTED), _pod(exit_code=4))
    assert outcome is not None
    assert outcome.status["phase"] == "Failed" and "nextTryAt" not in outcome.status
    assert outcome.status["tries"][0]["phase"] == "Failed"
    last = {**ADMITTED, "retryPolicy": {"limit": 1, "backoffSeconds": 0}, "tryCount": 2,
            "runId": "run-u-2", "tries": [ADMITTED["tries"][0] | {"phase": "Failed"},
                                          {"try": 2, "runId": "run-u-2", "phase": "Pending"}]}
    ended = progress(_execution(last), _pod(exit_code=4))
    assert ended is not None and ended.status["phase"] == "Failed"
    assert [t["phase"] for t in ended.status["tries"]] == ["Failed", "Failed"]
    succeeded = next(c for c in ended.status["conditions"] if c["type"] == "Succeeded")
    assert "try 2 of 2: no retries left" in succeeded["message"]
